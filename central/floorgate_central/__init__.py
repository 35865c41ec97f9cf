"""floorgate_central: the central side of floorgate's MQTT interface (docs/central-client.md).

```python
async with Central("broker.hotel", 8883, client_id="pms-bridge", keys=keys,
                   tls_context=ctx) as central:
    floor = await central.floor("main-12", timeout_s=30)
    reply = await floor.command("checkin", {...})      # CommandRefused, CommandTimeout
    with floor.events() as events:
        async for event in events: ...                  # duplicates dropped, gaps marked
```
"""

import logging

from floorgate_central.client import Central, partition_of
from floorgate_central.errors import (
    CentralError,
    CommandError,
    CommandRefused,
    CommandTimeout,
    NoKey,
)
from floorgate_central.floor import (
    ATTEMPTS,
    INTERNAL_RETRY_S,
    REPLY_TIMEOUT_S,
    RESIGN_AFTER_S,
    Floor,
    GapFilling,
    Stream,
)
from floorgate_central.model import (
    Alarm,
    AlarmCleared,
    Change,
    Climate,
    Event,
    FloorStatus,
    Inventory,
    InventoryRoom,
    Reply,
    RoomState,
    SeqRange,
)
from floorgate_central.sequence import EventFilter, Sequencer
from floorgate_central.signing import (
    Operator,
    canonical_json,
    envelope,
    format_ts,
    load_key,
    parse_ts,
    sign,
    token_hash,
)

# A library logs; the application decides where to (logging's usual convention).
logging.getLogger("floorgate_central").addHandler(logging.NullHandler())

__all__ = [
    "ATTEMPTS",
    "INTERNAL_RETRY_S",
    "REPLY_TIMEOUT_S",
    "RESIGN_AFTER_S",
    "Alarm",
    "AlarmCleared",
    "Central",
    "CentralError",
    "Change",
    "Climate",
    "CommandError",
    "CommandRefused",
    "CommandTimeout",
    "Event",
    "EventFilter",
    "Floor",
    "FloorStatus",
    "GapFilling",
    "Inventory",
    "InventoryRoom",
    "NoKey",
    "Operator",
    "Reply",
    "RoomState",
    "SeqRange",
    "Sequencer",
    "Stream",
    "canonical_json",
    "envelope",
    "format_ts",
    "load_key",
    "parse_ts",
    "partition_of",
    "sign",
    "token_hash",
]
