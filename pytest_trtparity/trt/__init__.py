"""TensorRT support: engine building, the runtime's device plumbing and the plain logic around them.

Only `api.py` imports TensorRT and only `cuda.py` imports cuda-python, both lazily. Everything else
here (profile planning, dtype and buffer arithmetic, cache keys, compatibility checks, build
reports) is plain Python, so it is tested in CI on machines that have neither.
"""
