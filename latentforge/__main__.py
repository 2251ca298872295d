from latentforge.cli import main

raise SystemExit(main())
