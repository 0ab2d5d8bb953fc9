import sys

from study_admin.cli import main

sys.exit(main())
