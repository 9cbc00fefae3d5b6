from livemood.cli import main

raise SystemExit(main())
