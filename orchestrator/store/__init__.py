"""The state store: the protocol the node codes against (`protocol`) and its Redis
implementation (`redis`), which alone knows keys, Lua and pub/sub."""

from .protocol import (ANY_WORKER, ActionOutcome, ApplyOutcome, ApplyResult, ClaimedTask, DecisionRefused, Due,
                       FirstDecision, ResultAck, ResultOutcome, SearchPage, Started, Stepped, Store, StoreUnavailable,
                       Subscription, Topic, TopicInfo, WorkerResult)

__all__ = ["ANY_WORKER", "ActionOutcome", "ApplyOutcome", "ApplyResult", "ClaimedTask", "DecisionRefused", "Due",
           "FirstDecision", "ResultAck", "ResultOutcome", "SearchPage", "Started", "Stepped", "Store",
           "StoreUnavailable", "Subscription", "Topic", "TopicInfo", "WorkerResult"]
