"""fastcore's compiled core: one extension module per concept (see the .pxd headers)."""
