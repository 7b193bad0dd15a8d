import sys

from convstudio.designer.cli.main import main

sys.exit(main())
