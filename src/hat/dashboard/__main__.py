"""``python -m hat.dashboard ...``: runs :func:`hat.dashboard.cli.main`."""

from hat.dashboard.cli import main

raise SystemExit(main())
