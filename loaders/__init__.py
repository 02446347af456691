"""Everything that consumes a store (streaming loaders, views, augmentations): see the loaders issue."""
