"""Re-export of the Iq contract, which lives in the package :mod:`iq`.

``mediad`` and the tests still import the contract from here; new code
imports :mod:`iq`.  This module goes once every importer has moved.
"""

from iq import *  # noqa: F401,F403
from iq import __all__  # noqa: F401
