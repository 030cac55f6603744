"""Event and log streams: discrete events (PLC alarm codes, state changes, log templates).

Stage 1 is :mod:`agent.events.rarity`, stage 3 :mod:`agent.events.sequence`, the
per-source wiring :mod:`agent.events.cascade`; log lines become events in
:mod:`agent.logs`.
Kept import-free here: :mod:`agent.config` imports :mod:`agent.events.config`.
"""
