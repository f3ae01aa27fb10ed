"""Kind declarations: the contract (``base``) and the built-in kinds. Registered in ``backend.registry``."""
