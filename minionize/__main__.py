from .cli.minion import main

raise SystemExit(main())
