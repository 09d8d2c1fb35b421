"""The four services of the order flow, as plain state machines shared by both styles.

Orders, stock and payments live here, in the process that runs the comparison, so what a
failure left behind can be counted afterwards. Every operation is idempotent by (order, op):
a repeated delivery is counted and changes nothing, as real services must arrange it (both
styles deliver at least once).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

CARD_LIMIT = 1000          # a charge above this is declined
START_STOCK = 1_000_000


class Declined(Exception):
    """The card was declined: not retried, the order is undone."""


class Unavailable(Exception):
    """The service is down (injected): the caller's delivery is retried later."""


@dataclass
class Order:
    order_id: str
    amount: int
    items: int
    status: str = "NEW"      # NEW -> CREATED -> RESERVED -> CHARGED -> SHIPPED, or CANCELLED


@dataclass
class Shop:
    stock: int = START_STOCK
    orders: dict[str, Order] = field(default_factory=dict)
    reserved: Counter[str] = field(default_factory=Counter)     # units held per order
    charged: Counter[str] = field(default_factory=Counter)      # amount charged per order
    done: set[tuple[str, str]] = field(default_factory=set)     # (order, operation) applied
    duplicates: int = 0                                          # repeated deliveries ignored
    calls: Counter[str] = field(default_factory=Counter)         # operations applied, by name
    refused: int = 0                                             # calls refused while the stock service was down
    declined: int = 0                                            # charges declined (over the card limit)
    stock_down: threading.Event = field(default_factory=threading.Event)   # the stock service "crashed"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _once(self, order_id: str, operation: str) -> bool:
        """Whether to apply `operation` to the order now (False: it was applied before)."""
        key = (order_id, operation)
        if key in self.done:
            self.duplicates += 1
            return False
        self.done.add(key)
        self.calls[operation] += 1
        return True

    def create_order(self, order_id: str, amount: int, items: int) -> None:
        with self.lock:
            if self._once(order_id, "create"):
                self.orders[order_id] = Order(order_id, amount, items, "CREATED")

    def _stock_service_up(self) -> None:
        if self.stock_down.is_set():
            with self.lock:
                self.refused += 1
            raise Unavailable("the stock service is down")

    def reserve_stock(self, order_id: str) -> None:
        self._stock_service_up()
        with self.lock:
            if self._once(order_id, "reserve"):
                order = self.orders[order_id]
                self.stock -= order.items
                self.reserved[order_id] += order.items
                order.status = "RESERVED"

    def charge(self, order_id: str) -> None:
        with self.lock:
            order = self.orders[order_id]
            if order.amount > CARD_LIMIT:
                self.declined += 1
                raise Declined(f"card declined: {order.amount} is over the limit of {CARD_LIMIT}")
            if self._once(order_id, "charge"):
                self.charged[order_id] += order.amount
                order.status = "CHARGED"

    def ship(self, order_id: str) -> None:
        with self.lock:
            if self._once(order_id, "ship"):
                self.orders[order_id].status = "SHIPPED"

    def release_stock(self, order_id: str) -> None:
        self._stock_service_up()
        with self.lock:
            if self._once(order_id, "release"):
                self.stock += self.reserved.pop(order_id, 0)

    def cancel_order(self, order_id: str) -> None:
        with self.lock:
            if self._once(order_id, "cancel"):
                self.orders[order_id].status = "CANCELLED"

    def left_behind(self) -> dict[str, int]:
        """What failures left: orders stuck before an end, stock held by cancelled orders,
        money taken for orders not shipped."""
        with self.lock:
            stuck = sum(1 for o in self.orders.values() if o.status not in ("SHIPPED", "CANCELLED"))
            held = sum(units for order_id, units in self.reserved.items()
                       if self.orders[order_id].status == "CANCELLED")
            charged_unshipped = sum(1 for order_id, amount in self.charged.items()
                                    if amount and self.orders[order_id].status != "SHIPPED")
            return {"orders_not_finished": stuck, "stock_units_held_by_cancelled_orders": held,
                    "charged_but_not_shipped": charged_unshipped,
                    "stock_missing": START_STOCK - self.stock - sum(self.reserved.values())}
