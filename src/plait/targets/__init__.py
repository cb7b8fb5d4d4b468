"""Output types: one module per type, each registered in ``plait.registry``."""
