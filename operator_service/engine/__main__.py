"""`python -m operator_service.engine`: the same as `operator-service engine`."""

import sys

from operator_service.engine import main

sys.exit(main())
