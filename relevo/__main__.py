from __future__ import annotations

from relevo.cli import main

main()
