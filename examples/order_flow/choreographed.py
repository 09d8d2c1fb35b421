"""The order flow as choreography: services that only publish and subscribe.

    orders.placed   -> order service:    create        -> order.created
    order.created   -> stock service:    reserve       -> stock.reserved
    stock.reserved  -> payment service:  charge        -> payment.charged | payment.declined
    payment.charged -> shipping service: ship          -> order.shipped
    payment.declined-> stock service:    release       -> stock.released
    stock.released  -> order service:    cancel        -> order.cancelled

Each arrow is a consumer group on the event bus; a handler that raises (the stock service is
down) leaves its event unacknowledged, and it is delivered again after REDELIVER_S. Every
service publishes its outcome each time it handles an event (at least once); the next service
dedupes by order id (the Shop's idempotent operations).
"""

from __future__ import annotations

import time
from typing import Any

from worker import Event, Subscriber, WorkflowClient, subscribe

from .shop import Declined, Shop

REDELIVER_S = 1.0
PREFIX = "of"
TOPICS = ("orders.placed", "order.created", "stock.reserved", "payment.charged", "payment.declined",
          "order.shipped", "stock.released", "order.cancelled")


def topic(name: str, run: str) -> str:
    return f"{PREFIX}.{run}.{name}"


class Services:
    """The four services' subscribers, and counts of what they published and received."""

    def __init__(self, shop: Shop, endpoints: list[str], run: str) -> None:
        self.shop = shop
        self.run = run
        self.client = WorkflowClient(endpoints)
        self.published = 0
        t = lambda name: topic(name, run)   # noqa: E731

        def emit(name: str, event: Event) -> None:
            self.client.publish_event(t(name), event.payload, key=event.key)
            self.published += 1

        @subscribe(t("orders.placed"), group="order-service", redeliver_after_s=REDELIVER_S)
        def create(event: Event) -> None:
            shop.create_order(event.key, int(event.payload["amount"]), int(event.payload["items"]))
            emit("order.created", event)

        @subscribe(t("order.created"), group="stock-service", redeliver_after_s=REDELIVER_S, max_deliveries=20)
        def reserve(event: Event) -> None:
            shop.reserve_stock(event.key)   # raises while the stock service is down: delivered again
            emit("stock.reserved", event)

        @subscribe(t("stock.reserved"), group="payment-service", redeliver_after_s=REDELIVER_S)
        def charge(event: Event) -> None:
            try:
                shop.charge(event.key)
            except Declined as exc:
                self.client.publish_event(t("payment.declined"), {**event.payload, "reason": str(exc)}, key=event.key)
                self.published += 1
                return
            emit("payment.charged", event)

        @subscribe(t("payment.charged"), group="shipping-service", redeliver_after_s=REDELIVER_S)
        def ship(event: Event) -> None:
            shop.ship(event.key)
            emit("order.shipped", event)

        @subscribe(t("payment.declined"), group="stock-service", redeliver_after_s=REDELIVER_S, max_deliveries=20)
        def release(event: Event) -> None:
            shop.release_stock(event.key)
            emit("stock.released", event)

        @subscribe(t("stock.released"), group="order-service", redeliver_after_s=REDELIVER_S)
        def cancel(event: Event) -> None:
            shop.cancel_order(event.key)
            emit("order.cancelled", event)

        self.subscribers = [
            Subscriber(endpoints=endpoints, handlers=[create, cancel], wait_s=0.5, consumer="order-service"),
            Subscriber(endpoints=endpoints, handlers=[reserve, release], wait_s=0.5, consumer="stock-service"),
            Subscriber(endpoints=endpoints, handlers=[charge], wait_s=0.5, consumer="payment-service"),
            Subscriber(endpoints=endpoints, handlers=[ship], wait_s=0.5, consumer="shipping-service"),
        ]

    def start(self) -> None:
        for subscriber in self.subscribers:
            subscriber.start()
        time.sleep(1.5)   # every group exists once its subscriber asked: they start at the topic's end

    def stop(self) -> None:
        for subscriber in self.subscribers:
            subscriber.stop()
        self.client.close()

    @property
    def received(self) -> int:
        return sum(s.stats.received for s in self.subscribers)


def run_orders(client: WorkflowClient, run: str, orders: list[dict[str, Any]], rate: float, duplicate_every: int,
               on_order: Any) -> tuple[dict[str, int], int]:
    """Publish orders.placed per order at `rate`/s (some twice: a duplicated event).
    ({order: published_at_ms of the first placement}, duplicates sent)."""
    placed: dict[str, int] = {}
    duplicates = 0
    for index, order in enumerate(orders):
        on_order(index)
        placed[order["order"]] = int(time.time() * 1000)
        client.publish_event(topic("orders.placed", run), order, key=order["order"])
        if duplicate_every and index % duplicate_every == 0:
            client.publish_event(topic("orders.placed", run), order, key=order["order"])
            duplicates += 1
        time.sleep(1 / rate)
    return placed, duplicates


def collect(client: WorkflowClient, run: str, placed: dict[str, int], timeout_s: float) -> dict[str, tuple[str, int]]:
    """{order: (how it ended, ms from placement to its first final event)}, read from the bus."""
    ended: dict[str, tuple[str, int]] = {}
    cursors = {name: "" for name in ("order.shipped", "order.cancelled")}
    deadline = time.monotonic() + timeout_s
    while len(ended) < len(placed) and time.monotonic() < deadline:
        for name in cursors:
            for event in client.read_events(topic(name, run), after=cursors[name], limit=1000):
                cursors[name] = event["event_id"]
                order = event["key"]
                if order in placed and order not in ended:
                    ended[order] = (name, int(event["published_at_ms"]) - placed[order])
        time.sleep(0.2)
    return ended
