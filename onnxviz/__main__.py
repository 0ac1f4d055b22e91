"""``python -m onnxviz`` runs the CLI."""

from .cli import main

raise SystemExit(main())
