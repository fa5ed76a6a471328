"""Streamlit building blocks shared by pages (galleries, review forms, target pickers).

Pages stay thin (tests/test_layering.py); anything longer that needs streamlit lives here,
anything that computes lives in ``diagnostics/`` or ``repair/``.
"""
