"""The library core: layer maps, LLRD, freezing, the feature cache, checkpoint state and TransferTrainer."""
