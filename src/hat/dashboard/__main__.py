"""``python -m hat.dashboard ...``: runs :func:`hat.dashboard.cli.main`."""

import sys

try:
    from hat.dashboard.cli import main
except ModuleNotFoundError as error:
    if error.name != "wandb_workspaces" and not (error.name or "").startswith("wandb_workspaces."):
        raise
    from hat.extras import install_hint

    print(f"hat.dashboard: needs the wandb-workspaces package, which is not installed: {install_hint('dashboard')}",
          file=sys.stderr)
    raise SystemExit(2) from error

raise SystemExit(main())
