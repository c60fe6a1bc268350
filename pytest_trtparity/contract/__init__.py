"""The binding contract: its model and loading (`model`), dtypes, invariants, the engine's I/O in
the contract's terms (`io`), record-to-contract bindings, and starter contracts."""

from .model import Contract, contract_from_json, load_contract

__all__ = ["Contract", "contract_from_json", "load_contract"]
