"""Deliberately naive pure-Python reference models, written from the documented formulas."""
