"""Reading and seeding the per-workspace page state in AppTests."""

from pages import ui


def ws_state(at, spec: str | None = None) -> dict:
    """The per-workspace state of ``spec`` (or of the only workspace seen so far)."""
    store = at.session_state[ui.PER_WORKSPACE]
    if spec is None:
        assert len(store) == 1, list(store)
        return next(iter(store.values()))
    return store[spec]


def seeded(spec: str, *, target: dict | None = None, source: str | None = None, rho: float | None = None) -> dict:
    """Session state that gives workspace ``spec`` a repair target (and/or a what-if rho)."""
    state = {}
    if target is not None:
        state[ui.TARGET] = target
        state[ui.TARGET_SOURCE] = source
    if rho is not None:
        state[ui.WOS_RHO] = rho
    return {ui.PER_WORKSPACE: {spec: state}}
