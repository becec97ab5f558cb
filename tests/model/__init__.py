"""Deliberately naive pure-Python reference models, written from DESIGN.md's formulas."""
