"""The one error a rule definition can raise: where it is wrong, and why."""

from __future__ import annotations

from relevo.errors import ErrorDetail, ValidationError

CODE = "invalid_rule"


class RuleError(ValidationError):
    """A rule that does not parse or does not validate.

    ``details`` holds one :class:`~relevo.errors.ErrorDetail` per problem found, each with a
    ``location`` ("line 1, column 17" in the text form, a JSON path such as
    ``$.and[1]["=="][0]`` in the JSON form), a ``message`` and ``code="invalid_rule"``.
    """

    code = CODE

    def __init__(self, details: list[ErrorDetail]) -> None:
        assert details, "a RuleError needs at least one detail"
        first = details[0]
        message = f"invalid rule at {first.location}: {first.message}"
        if len(details) > 1:
            message += f" (and {len(details) - 1} more problem{'s' if len(details) > 2 else ''})"
        super().__init__(message, details=details)

    @classmethod
    def at(cls, location: str, message: str) -> RuleError:
        return cls([ErrorDetail(location=location, message=message, code=CODE)])
