# Puts the SDK (sdk/python/sluice_sdk) on the path for pytest, as build.sh puts
# it on componentize-py's.
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "sdk", "python"))
