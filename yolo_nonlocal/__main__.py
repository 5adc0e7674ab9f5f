import sys

from yolo_nonlocal.cli import main

sys.exit(main())
