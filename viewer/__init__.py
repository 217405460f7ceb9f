"""Interactive PyVista viewer of a fitted distance field (installed as siren3d.viewer)."""
