"""``python -m fastwnll ...`` is the same as the ``fastwnll`` command."""

from fastwnll.cli import main

raise SystemExit(main())
