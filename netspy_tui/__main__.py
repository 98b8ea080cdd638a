from netspy_tui.cli import main

raise SystemExit(main())
