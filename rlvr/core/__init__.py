"""What every part of rlvr shares: the data model (types), the Environment protocol, the name registries, the typed configuration and model loading."""
