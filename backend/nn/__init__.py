"""Runtime modules (torch + stdlib only; see common.py for the contract)."""
