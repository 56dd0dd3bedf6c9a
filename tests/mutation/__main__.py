"""`python -m tests.mutation`: mutate the money-critical modules and the schema, one change at a time."""

import sys

from tests.mutation.runner import main

sys.exit(main())
