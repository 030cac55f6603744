"""Log lines as event streams (issue #8).

A raw line is split into timestamp, level, component and message (:mod:`agent.logs.parse`),
the message's variable fields are masked (:mod:`agent.logs.mask`) and a Drain-style miner
groups it into a template with a stable id (:mod:`agent.logs.miner`, state in
:mod:`agent.logs.state`). :mod:`agent.logs.stream` turns the template id into an event of
the event cascade (:mod:`agent.events`), with the level and component for their rarity.
Transport-agnostic: :meth:`agent.logs.stream.LogStream.process_line` takes one raw line.
"""
