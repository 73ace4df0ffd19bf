"""Declarative caches: the flash seeds' InstanceCache, QuerysetCache, ModelCacheManager and
BatchCacheQuery, invalidated by the same stamps as every other cached value."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.http import Http404
from django.test import override_settings

from freshcache import (
    BatchCacheQuery,
    ImproperlyConfigured,
    InstanceCache,
    ModelCacheManager,
    QuerysetCache,
    bump_version,
    cached_as,
    declarative,
    fallback,
    invalidate_all,
    managers,
)
from freshcache.checks import check_declarative
from freshcache.managers import CachedRelation, CacheNotRegistered, merged_options
from freshcache.store import store
from tests.flashapp.caches import (
    FlagListCacheOnTarget,
    ParticipatedEventIdListCacheOnUser,
    ParticipationCacheManager,
    ParticipationCacheOnUserEvent,
    ParticipationCountCacheOnUser,
    ParticipationListCacheOnUser,
    PrimaryAvatarCacheOnUser,
    UserCacheOnUsername,
)
from tests.flashapp.helpers import Calls, backend_calls
from tests.flashapp.models import Avatar, Event, Flag, Participation, User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bill() -> User:
    return User.objects.create(username="bill1992", name="Bill")


@pytest.fixture
def ann() -> User:
    return User.objects.create(username="ann", name="Ann")


@pytest.fixture
def event() -> Event:
    return Event.objects.create(slug="pycon", title="PyCon")


@pytest.fixture
def registry() -> Iterator[None]:
    """Classes a test defines (some deliberately wrong) leave no trace in the registries."""
    classes = dict(declarative._classes)
    simple = {k: dict(v) for k, v in declarative.simple_classes.items()}
    manager_classes, built = dict(managers._manager_classes), dict(managers._managers)
    yield
    declarative._classes.clear()
    declarative._classes.update(classes)
    declarative.simple_classes.clear()
    declarative.simple_classes.update(simple)
    managers._manager_classes.clear()
    managers._manager_classes.update(manager_classes)
    managers._managers.clear()
    managers._managers.update(built)


# -- seed 001: InstanceCache ------------------------------------------------------------------


def test_instance_cache_positional_or_keyword(bill: User, queries: Any) -> None:
    with queries() as q:
        assert UserCacheOnUsername("bill1992").resolve() == bill
    assert q.count == 1
    with queries() as q:
        user = UserCacheOnUsername(username="bill1992").resolve()
        assert UserCacheOnUsername.get("bill1992") == bill
    assert q.count == 0
    assert (user.pk, user.name) == (bill.pk, "Bill")


def test_missing_instance_raises_like_the_orm_until_it_exists(queries: Any) -> None:
    with pytest.raises(User.DoesNotExist, match=r"User matching query does not exist\."):
        UserCacheOnUsername("ghost").resolve()
    with queries() as q, pytest.raises(User.DoesNotExist):
        UserCacheOnUsername("ghost").resolve()  # the absence is cached too
    assert q.count == 0
    User.objects.create(username="ghost")
    assert UserCacheOnUsername("ghost").resolve().username == "ghost"


def test_cache_manager_get_get_or_none_get_or_404(bill: User, queries: Any) -> None:
    assert User.cache.get(username="bill1992") == bill
    with queries() as q:
        assert User.cache.get(username="bill1992") == bill
        assert UserCacheOnUsername("bill1992").resolve() == bill  # the same cached value
    assert q.count == 0
    assert User.cache.get_or_none(username="nobody") is None
    with pytest.raises(Http404):
        User.cache.get_or_404(username="nobody")
    assert User.cache.get_or_404(username="bill1992") == bill


def test_custom_get_instance_may_cache_none(bill: User, queries: Any) -> None:
    Avatar.objects.create(user=bill, file_path="a.png", primary=False)
    assert PrimaryAvatarCacheOnUser(user=bill).resolve() is None
    with queries() as q:
        assert PrimaryAvatarCacheOnUser(user=bill).resolve() is None
    assert q.count == 0
    primary = Avatar.objects.create(user=bill, file_path="b.png", primary=True)
    assert PrimaryAvatarCacheOnUser(user=bill).resolve() == primary
    Avatar.objects.filter(pk=primary.pk).update(primary=False)
    assert PrimaryAvatarCacheOnUser(user_id=bill.pk).resolve() is None


def test_key_fields_calling_conventions(bill: User, event: Event, queries: Any) -> None:
    p = Participation.objects.create(user=bill, event=event)
    assert ParticipationCacheOnUserEvent(bill, event).resolve() == p
    with queries() as q:
        assert ParticipationCacheOnUserEvent(bill, event=event).resolve() == p
        assert ParticipationCacheOnUserEvent(event=event, user=bill).resolve() == p
        assert ParticipationCacheOnUserEvent(user_id=bill.pk, event_id=event.pk).resolve() == p
        assert ParticipationCacheOnUserEvent(bill.pk, str(event.pk)).resolve() == p
        assert Participation.cache.get(user=bill, event=event) == p
        assert Participation.cache.get(user=bill, event_id=event.pk) == p
    assert q.count == 0
    keys = {
        ParticipationCacheOnUserEvent(bill, event).key,
        ParticipationCacheOnUserEvent(user_id=bill.pk, event_id=str(event.pk)).key,
    }
    assert len(keys) == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((1, 2, 3), {}, r"ParticipationCacheOnUserEvent\(\) takes its key fields \(user, event\)"),
        ((1,), {}, r"missing key field\(s\) \['event'\]; its key fields are \(user, event\)"),
        ((), {"user": 1, "evnt": 2}, r"unexpected argument 'evnt'; .*\(user, event\)"),
        ((1,), {"user_id": 1, "event": 2}, r"two values for 'user'"),
    ],
)
def test_wrong_arguments_raise_type_error(args: Any, kwargs: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        ParticipationCacheOnUserEvent(*args, **kwargs)


def test_wrong_values_raise_value_error(event: Event) -> None:
    with pytest.raises(ValueError, match="'user' takes User"):
        ParticipationCacheOnUserEvent(event, event)
    with pytest.raises(ValueError, match="unsaved"):
        ParticipationCacheOnUserEvent(User(username="x"), event)
    with pytest.raises(ValueError, match="'user'"):
        ParticipationCacheOnUserEvent("not a number", event)
    with pytest.raises(ValueError, match="saved model instance"):
        FlagListCacheOnTarget(target=3)


def test_generic_foreign_key_as_key_field(bill: User, event: Event, queries: Any) -> None:
    Flag.objects.create(target=event, reason="spam")
    assert [f.reason for f in FlagListCacheOnTarget(target=event).resolve()] == ["spam"]
    Flag.objects.create(target=bill, reason="rude")  # another target
    with queries() as q:
        assert [f.reason for f in FlagListCacheOnTarget(event).resolve()] == ["spam"]
    assert q.count == 0
    Flag.objects.create(target=event, reason="dup")
    assert [f.reason for f in FlagListCacheOnTarget(event).resolve()] == ["spam", "dup"]


# -- seed 000: QuerysetCache ------------------------------------------------------------------


def test_queryset_cache_list_count_and_event_ids(
    bill: User, ann: User, event: Event, queries: Any
) -> None:
    other = Event.objects.create(slug="djangocon", title="DjangoCon")
    p = Participation.objects.create(user=bill, event=event)
    assert ParticipationListCacheOnUser(user=bill).resolve() == [p]
    event_ids = ParticipatedEventIdListCacheOnUser(bill).resolve()
    assert event_ids == [event.pk] and type(event_ids) is list  # evaluated, never lazy
    assert ParticipationCountCacheOnUser(bill).resolve() == 1
    Participation.objects.create(user=ann, event=other)  # another user: nothing changes
    with queries() as q:
        assert ParticipationListCacheOnUser(bill).resolve() == [p]
        assert ParticipatedEventIdListCacheOnUser(bill).resolve() == [event.pk]
        assert ParticipationCountCacheOnUser(bill).resolve() == 1
    assert q.count == 0
    Participation.objects.create(user=bill, event=other)
    assert ParticipatedEventIdListCacheOnUser(bill).resolve() == [event.pk, other.pk]
    assert ParticipationCountCacheOnUser(bill).resolve() == 2


def test_model_cache_manager_filter_and_user_methods(
    bill: User, event: Event, queries: Any
) -> None:
    p = Participation.objects.create(user=bill, event=event)
    assert isinstance(Participation.cache, ParticipationCacheManager)
    assert Participation.cache.filter(user=bill) == [p]
    assert Participation.cache.filter(event_id=event.pk) == [p]
    assert Participation.cache.get_count_for_user(bill) == 1
    assert Participation.cache.get_event_id_list_for_user(bill) == [event.pk]
    with queries() as q:
        assert ParticipationListCacheOnUser(bill).resolve() == [p]  # shared with .filter(user=)
        assert Participation.cache.get_count_for_user(bill) == 1
    assert q.count == 0


def test_a_returned_queryset_is_evaluated_before_storing(bill: User, event: Event) -> None:
    class LazyParticipationsOnUser(QuerysetCache):
        model = Participation
        key_fields = ("user",)

        def get_result(self, user: Any) -> Any:
            return self.get_queryset().filter(user=user)

    p = Participation.objects.create(user=bill, event=event)
    assert LazyParticipationsOnUser(bill).resolve() == [p]
    assert LazyParticipationsOnUser(bill).resolve() == [p]


def test_a_lazy_queryset_inside_the_value_is_read_in_the_capture(bill: User, event: Event) -> None:
    """The queryset in the dict runs its query while the value is pickled: still inside the
    capture, so the value carries that read's stamps and a write to those rows reaches it."""

    class ScoresOnUser(QuerysetCache):
        model = Participation
        key_fields = ("user",)

        def get_result(self, user: Any) -> Any:
            return {"scores": self.get_queryset().filter(user=user).values_list("score")}

    p = Participation.objects.create(user=bill, event=event, score=1)
    assert list(ScoresOnUser(bill).resolve()["scores"]) == [(1,)]
    p.score = 2
    p.save()
    assert list(ScoresOnUser(bill).resolve()["scores"]) == [(2,)]


# -- invalidation paths -----------------------------------------------------------------------


def test_key_field_change_invalidates_old_and_new_values(
    bill: User, ann: User, event: Event
) -> None:
    p = Participation.objects.create(user=bill, event=event)
    assert ParticipationListCacheOnUser(bill).resolve() == [p]
    assert ParticipationListCacheOnUser(ann).resolve() == []
    assert ParticipationCacheOnUserEvent(bill, event).resolve() == p
    p.user = ann
    p.save()
    assert ParticipationListCacheOnUser(bill).resolve() == []
    assert ParticipationListCacheOnUser(ann).resolve() == [p]
    with pytest.raises(Participation.DoesNotExist):
        ParticipationCacheOnUserEvent(bill, event).resolve()
    assert ParticipationCacheOnUserEvent(ann, event).resolve() == p


def test_instance_key_field_rename(bill: User) -> None:
    assert UserCacheOnUsername("bill1992").resolve() == bill
    bill.username = "william"
    bill.save()
    with pytest.raises(User.DoesNotExist):
        UserCacheOnUsername("bill1992").resolve()
    assert UserCacheOnUsername("william").resolve().pk == bill.pk


def test_related_write_invalidates(bill: User, event: Event) -> None:
    class EventTitlesOnUser(QuerysetCache):
        model = Participation
        key_fields = ("user",)

        def get_result(self, user: Any) -> list[str]:
            rows = self.get_queryset().filter(user=user).select_related("event")
            return [p.event.title for p in rows]

    Participation.objects.create(user=bill, event=event)
    assert EventTitlesOnUser(bill).resolve() == ["PyCon"]
    Event.objects.filter(pk=event.pk).update(title="PyCon US")
    assert EventTitlesOnUser(bill).resolve() == ["PyCon US"]


class UserBadgeCache(InstanceCache):
    """A custom fallback that reads other models, counts and values_list."""

    model = User
    key_fields = ("username",)
    calls = Calls()

    def get_instance(self, username: str) -> dict[str, Any]:
        self.calls()
        user = self.get_queryset().get(username=username)
        return {
            "name": user.name,
            "avatars": Avatar.objects.filter(user=user).count(),
            "events": list(
                Participation.objects.filter(user=user).values_list("event__slug", flat=True)
            ),
        }


def test_custom_fallback_reading_other_models(
    bill: User, ann: User, event: Event, queries: Any
) -> None:
    UserBadgeCache.calls.n = 0
    assert UserBadgeCache("bill1992").resolve() == {"name": "Bill", "avatars": 0, "events": []}
    Avatar.objects.create(user=ann, file_path="x.png")  # someone else's avatar
    with queries() as q:
        UserBadgeCache("bill1992").resolve()
    assert (q.count, UserBadgeCache.calls.n) == (0, 1)
    Avatar.objects.create(user=bill, file_path="b.png")
    assert UserBadgeCache("bill1992").resolve()["avatars"] == 1
    p = Participation.objects.create(user=bill, event=event)
    assert UserBadgeCache("bill1992").resolve()["events"] == ["pycon"]
    Event.objects.filter(pk=event.pk).update(slug="pycon-us")  # a joined row's value
    assert UserBadgeCache("bill1992").resolve()["events"] == ["pycon-us"]
    p.delete()
    assert UserBadgeCache("bill1992").resolve()["events"] == []
    assert UserBadgeCache.calls.n == 5


def test_delete_invalidates(bill: User, event: Event) -> None:
    p = Participation.objects.create(user=bill, event=event)
    assert ParticipationCountCacheOnUser(bill).resolve() == 1
    assert ParticipationCacheOnUserEvent(bill, event).resolve() == p
    p.delete()
    assert ParticipationCountCacheOnUser(bill).resolve() == 0
    with pytest.raises(Participation.DoesNotExist):
        ParticipationCacheOnUserEvent(bill, event).resolve()
    assert UserCacheOnUsername("bill1992").resolve() == bill
    User.objects.filter(pk=bill.pk).delete()  # a queryset delete, cascading
    with pytest.raises(User.DoesNotExist):
        UserCacheOnUsername("bill1992").resolve()


def test_queryset_update_invalidates(bill: User, event: Event) -> None:
    Participation.objects.create(user=bill, event=event, score=1)
    assert [p.score for p in ParticipationListCacheOnUser(bill).resolve()] == [1]
    Participation.objects.filter(user=bill).update(score=5)
    assert [p.score for p in ParticipationListCacheOnUser(bill).resolve()] == [5]


def test_related_objects_from_outside_are_not_stored(bill: User) -> None:
    """``user.avatars`` attaches the caller's ``user`` to each avatar; a hit reloads it."""

    class AvatarViaRelatedManager(InstanceCache):
        model = Avatar
        key_fields = ("user",)

        def get_instance(self, user: User) -> Avatar | None:
            return user.avatars.filter(primary=True).first()

    class AvatarsInADict(QuerysetCache):
        model = Avatar
        key_fields = ("user",)

        def get_result(self, user: User) -> dict[str, Any]:
            return {"all": [(a, a.primary) for a in user.avatars.all()]}

    class AvatarsElsewhere(QuerysetCache):
        """Any container, any object: a set, an OrderedDict, an object of the caller's."""

        model = Avatar
        key_fields = ("user",)

        def get_result(self, user: User) -> Any:
            avatars = list(user.avatars.all())
            return (set(avatars), OrderedDict(first=avatars[0]), Holder(avatars[0]))

    def names_elsewhere() -> list[str]:
        in_set, ordered, holder = AvatarsElsewhere(bill).resolve()
        return [next(iter(in_set)).user.name, ordered["first"].user.name, holder.avatar.user.name]

    Avatar.objects.create(user=bill, file_path="b.png", primary=True)
    assert AvatarViaRelatedManager(bill).resolve().user.name == "Bill"
    assert AvatarsInADict(bill).resolve()["all"][0][0].user.name == "Bill"
    assert names_elsewhere() == ["Bill"] * 3
    User.objects.filter(pk=bill.pk).update(name="William")  # not read by the fallbacks
    assert AvatarViaRelatedManager(bill).resolve().user.name == "William"
    assert AvatarsInADict(bill).resolve()["all"][0][0].user.name == "William"
    assert names_elsewhere() == ["William"] * 3


@dataclasses.dataclass
class Holder:
    avatar: Avatar


def test_nested_in_cached_as_records_the_hit(bill: User) -> None:
    @cached_as(timeout=60)
    def greeting(username: str) -> str:
        return "hi " + UserCacheOnUsername(username).resolve().name

    UserCacheOnUsername("bill1992").resolve()  # cached first: greeting() gets a hit
    assert greeting("bill1992") == "hi Bill"
    User.objects.filter(pk=bill.pk).update(name="B")
    assert greeting("bill1992") == "hi B"


def test_uncommitted_writes_are_seen_and_not_stored(bill: User) -> None:
    assert UserCacheOnUsername("bill1992").resolve().name == "Bill"
    with transaction.atomic():
        User.objects.filter(pk=bill.pk).update(name="Inside")
        assert UserCacheOnUsername("bill1992").resolve().name == "Inside"
        transaction.set_rollback(True)
    assert UserCacheOnUsername("bill1992").resolve().name == "Bill"


def test_disabled_means_computed(bill: User, queries: Any) -> None:
    with override_settings(FRESHCACHE_ENABLED=False), queries() as q:
        UserCacheOnUsername("bill1992").resolve()
        UserCacheOnUsername("bill1992").resolve()
    assert q.count == 2


# -- options: timeout, version, invalidation, allowtime, lock ---------------------------------


def test_timeout_from_class_profile_or_defaults(bill: User) -> None:
    class ShortLivedUserCache(InstanceCache):
        model = User
        key_fields = ("username",)
        timeout = 30

    assert ShortLivedUserCache("x").spec().timeout == 30
    assert UserCacheOnUsername("x").spec().timeout == 3600  # FRESHCACHE_DEFAULTS
    with override_settings(FRESHCACHE={"flashapp.*": {"timeout": 90}}):
        assert UserCacheOnUsername("x").spec().timeout == 90
    with (
        override_settings(FRESHCACHE_DEFAULTS={}, FRESHCACHE={}),
        pytest.raises(ImproperlyConfigured, match="UserCacheOnUsername: no timeout"),
    ):
        UserCacheOnUsername("bill1992").resolve()


def test_version_changes_the_key() -> None:
    class VersionedUserCache(InstanceCache):
        model = User
        key_fields = ("username",)

    before = VersionedUserCache("x").key
    VersionedUserCache.version = 2
    assert VersionedUserCache("x").key != before


def test_invalidation_off_expires_by_time_only(bill: User) -> None:
    class UserNameByTime(InstanceCache):
        model = User
        key_fields = ("username",)
        invalidation = False
        timeout = 1

    greetings = Calls()

    @cached_as(timeout=60)
    def greeting() -> str:
        greetings()
        return "hi " + UserNameByTime("bill1992").resolve().name

    assert UserNameByTime("bill1992").resolve().name == "Bill"
    User.objects.filter(pk=bill.pk).update(name="B")
    assert UserNameByTime("bill1992").resolve().name == "Bill"  # not invalidated by writes
    assert greeting() == greeting() == "hi Bill"
    assert greetings.n == 2  # computed, never stored: it would outlive the time-only value
    invalidate_all()
    assert UserNameByTime("bill1992").resolve().name == "B"
    User.objects.filter(pk=bill.pk).update(name="C")
    time.sleep(1.2)
    assert UserNameByTime("bill1992").resolve().name == "C"


class CountWithAllowtime(QuerysetCache):
    model = Participation
    key_fields = ("user",)
    allowtime = 30
    calls = Calls()

    def get_result(self, user: Any) -> int:
        self.calls()
        return self.get_queryset().filter(user=user).count()


def test_allowtime_serves_a_young_stale_value_while_one_recomputes(
    bill: User, event: Event, queries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = CountWithAllowtime.calls
    calls.n = 0
    assert CountWithAllowtime(bill).resolve() == 0
    Participation.objects.create(user=bill, event=event)
    key = CountWithAllowtime(bill).key
    holder = store.try_lock(key, 10)  # another caller is recomputing it
    assert holder is not None
    with queries() as q:
        assert CountWithAllowtime(bill).resolve() == 0  # stale, but younger than allowtime
    assert (q.count, calls.n) == (0, 1)
    store.unlock(key, holder)
    assert CountWithAllowtime(bill).resolve() == 1  # nobody recomputes it: this caller does
    assert calls.n == 2
    probe = store.try_lock(key, 10)  # and it released the lock
    assert probe is not None
    store.unlock(key, probe)
    # Older than allowtime: never served stale, lock or not.
    Participation.objects.create(user=bill, event=event)
    holder = store.try_lock(key, 10)
    now = time.time()
    monkeypatch.setattr(fallback, "_now", lambda: now + 31)
    assert CountWithAllowtime(bill).resolve() == 2
    monkeypatch.setattr(fallback, "_now", time.time)
    # A bump (or invalidate_all) is never served stale either.
    Participation.objects.create(user=bill, event=event)
    bump_version(Participation)
    assert CountWithAllowtime(bill).resolve() == 3
    assert holder is not None
    store.unlock(key, holder)


def test_dog_pile_lock_computes_once(bill: User) -> None:
    class SlowGreeting(InstanceCache):
        model = User
        key_fields = ("username",)
        lock = True
        calls = Calls()

        def get_instance(self, username: str) -> str:
            self.calls()
            time.sleep(0.3)  # no database here: threads share only the cache backend
            return f"hello {username}"

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(SlowGreeting("x").resolve()))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["hello x"] * 3
    assert SlowGreeting.calls.n == 1


def test_bump_version_and_command(bill: User, event: Event, queries: Any) -> None:
    p = Participation.objects.create(user=bill, event=event)
    UserCacheOnUsername("bill1992").resolve()
    User.cache.get(pk=bill.pk)
    ParticipationListCacheOnUser(bill).resolve()
    bump_version(User)
    with queries() as q:
        UserCacheOnUsername("bill1992").resolve()
        User.cache.get(pk=bill.pk)
        assert ParticipationListCacheOnUser(bill).resolve() == [p]  # another model's: kept
    assert q.count == 2
    out = StringIO()
    call_command("bump_version", "flashapp.User", stdout=out)
    assert out.getvalue() == "bumped the cache version of flashapp.User\n"
    call_command("bump_version", "flashapp", stdout=out)
    with queries() as q:
        UserCacheOnUsername("bill1992").resolve()
        ParticipationListCacheOnUser(bill).resolve()
    assert q.count == 2
    with pytest.raises(CommandError, match="no installed app"):
        call_command("bump_version", "nope.Model")
    with pytest.raises(CommandError, match="no model"):
        call_command("bump_version", "flashapp.Nope")


# -- Model.cache and ModelCacheManager --------------------------------------------------------


def test_model_cache_dispatch_and_normalisation(bill: User, event: Event, queries: Any) -> None:
    p = Participation.objects.create(user=bill, event=event)
    assert Participation.cache.get(pk=p.pk) == p
    assert Participation.cache.get(user=bill, event=event) == p
    with queries() as q:
        assert Participation.cache.get(id=p.pk) == p
        assert Participation.cache.get(user_id=bill.pk, event=event) == p
    assert q.count == 0
    assert type(Participation.cache.get_query(user=bill, event_id=1)) is (
        ParticipationCacheOnUserEvent
    )
    # flash's names: the class for a set of key fields, and the key a get() reads.
    assert Participation.cache.get_cache_class_for("event", "user") is (
        ParticipationCacheOnUserEvent
    )
    key = Participation.cache.get_key(user=bill, event=event)
    assert key == ParticipationCacheOnUserEvent.get_key(bill, event)
    assert key == ParticipationCacheOnUserEvent(user=bill.pk, event=event.pk).key
    assert key != Participation.cache.get_key(user=bill, event_id=event.pk + 1)
    assert Event.cache.get(slug="pycon") == event  # declared in CacheMeta
    assert Avatar.cache.get_or_none(pk=999) is None  # every model: keyed on its pk
    with pytest.raises(CacheNotRegistered) as excinfo:
        Participation.cache.get(score=3)
    message = str(excinfo.value)
    assert "Declared key sets: [('event', 'user'), ('id',)]" in message
    assert "get_key_fields_list" in message
    with pytest.raises(CacheNotRegistered, match=r"Declared key sets: \[\]"):
        Avatar.cache.filter(user=bill)


def test_model_cache_never_takes_a_class_with_options_of_its_own(
    registry: None, bill: User, event: Event
) -> None:
    """A class keyed like ``Model.cache.get`` but time-based, or reading other rows, stays the
    class's own: ``Model.cache`` remains invalidated and reads every row."""

    class UserOnPkByTimeOnly(InstanceCache):
        model = User
        key_fields = ("pk",)
        invalidation = False

    class OnlyPyconOnSlug(InstanceCache):
        model = Event
        key_fields = ("slug",)

        def get_queryset(self) -> Any:
            return super().get_queryset().filter(slug="pycon")

    assert User.cache.get(pk=bill.pk).name == "Bill"
    User.objects.filter(pk=bill.pk).update(name="William")
    assert User.cache.get(pk=bill.pk).name == "William"
    other = Event.objects.create(slug="djangocon")
    assert Event.cache.get(slug="djangocon") == other


def test_cache_meta_merges_with_the_manager(registry: None) -> None:
    assert Participation.cache.cached_foreignkeys == ["event", "user"]  # from CacheMeta
    assert Participation.cache.get_key_fields_list == [("user", "event")]

    class Meta:
        timeout = 5

    class FakeModel:
        CacheMeta = Meta
        _meta = User._meta

    class TimedManager(ModelCacheManager):
        timeout = 10

    with pytest.raises(ImproperlyConfigured, match="set it in one place"):
        merged_options(TimedManager, FakeModel)  # type: ignore[arg-type]
    Meta.timeout = 10
    assert merged_options(TimedManager, FakeModel)["timeout"] == 10  # type: ignore[arg-type]


def test_cached_foreignkeys_go_through_the_cache(bill: User, event: Event, queries: Any) -> None:
    assert isinstance(Participation.__dict__["event"], CachedRelation)
    p = Participation.objects.create(user=bill, event=event)
    assert Participation.objects.get(pk=p.pk).event == event
    fresh = Participation.objects.get(pk=p.pk)
    with queries() as q:
        assert (fresh.event.title, fresh.user.username) == ("PyCon", "bill1992")
    assert q.count == 1  # the user: a first read; the event came from the cache
    Event.objects.filter(pk=event.pk).update(title="PyCon US")
    assert Participation.objects.get(pk=p.pk).event.title == "PyCon US"


def test_duplicate_names_are_errors_naming_both(registry: None) -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:

        class UserCacheOnUsername(InstanceCache):
            model = User
            key_fields = ("name",)

    message = str(excinfo.value)
    assert "tests.flashapp.caches.UserCacheOnUsername" in message
    assert "test_duplicate_names_are_errors_naming_both.<locals>.UserCacheOnUsername" in message
    with pytest.raises(ImproperlyConfigured, match="two cache managers"):

        class OtherParticipationManager(ModelCacheManager):
            model = Participation


def test_system_check_rejects_bad_key_fields(registry: None) -> None:
    assert [m for m in check_declarative() if m.id.startswith("freshcache.E01")] == []

    class ByUserId(QuerysetCache):
        model = Participation
        key_fields = ("user_id",)

    class ByNothing(QuerysetCache):
        model = Participation
        key_fields = ("usr",)

    class BadFks(ModelCacheManager):
        model = Avatar
        cached_foreignkeys = ["primary"]

    messages = {(m.id, m.msg, m.hint) for m in check_declarative()}
    ids = sorted(m[0] for m in messages)
    assert ids == ["freshcache.E017", "freshcache.E017", "freshcache.E018"]
    text = " ".join(f"{m} {h}" for _, m, h in messages)
    assert "ByUserId.key_fields: 'user_id' is the column of the foreign key 'user'" in text
    assert "Write 'user'" in text
    assert "ByNothing.key_fields: 'usr' is not a field of flashapp.Participation" in text
    assert "cached_foreignkeys" in text and "'primary'" in text
    with pytest.raises(ImproperlyConfigured, match="Write 'user'"):
        ByUserId(1)


def test_caches_modules_are_discovered_at_startup() -> None:
    code = (
        "import django; django.setup()\n"
        "from freshcache.declarative import cache_classes\n"
        "from tests.flashapp.models import Participation\n"
        "print(sorted(c.__name__ for c in cache_classes()))\n"
        "print(type(Participation.cache).__name__, type(Participation.__dict__['event']).__name__)"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "'UserCacheOnUsername'" in out and "'FlagListCacheOnTarget'" in out
    assert "ParticipationCacheManager CachedRelation" in out


# -- BatchCacheQuery --------------------------------------------------------------------------


def test_batch_reads_every_hit_in_one_round_trip(bill: User, event: Event, queries: Any) -> None:
    users = [User.objects.create(username=f"user{i}") for i in range(5)]
    for user in users:
        User.cache.get(pk=user.pk)
    Event.cache.get(slug="pycon")
    batch = BatchCacheQuery({"event": Event.cache.get_query(slug="pycon")})
    for user in users:
        batch.push({user.pk: User.cache.get_query(id=user.pk)})
    with queries() as q, backend_calls() as calls:
        result = batch.get()
    assert (q.count, dict(calls)) == (0, {"get_many": 1})
    assert result == {"event": event, **{u.pk: u for u in users}}
    declarative_hints_cleared()
    with queries() as q, backend_calls() as calls:
        assert batch.get() == result  # a fresh process: values, then all their stamps
    assert (q.count, dict(calls)) == (0, {"get_many": 2})


def declarative_hints_cleared() -> None:
    fallback.hints.clear()


def test_batch_computes_misses_only(bill: User, event: Event, queries: Any) -> None:
    UserCacheOnUsername("bill1992").resolve()
    batch = BatchCacheQuery(
        bill=UserCacheOnUsername("bill1992"), event=Event.cache.get_query(slug="pycon")
    )
    with queries() as q:
        assert batch.get(only_cache=True) == {"bill": bill}  # the miss is left out
    assert q.count == 0
    with queries() as q:
        assert batch.get() == {"bill": bill, "event": event}
    assert q.count == 1
    with queries() as q:
        assert batch.get() == {"bill": bill, "event": event}
    assert q.count == 0


def test_batch_exceptions(bill: User) -> None:
    batch = BatchCacheQuery({"bill": User.cache.get_query(pk=bill.pk)})
    batch.push(ghost=UserCacheOnUsername("ghost"))
    with pytest.raises(User.DoesNotExist):
        batch.get()
    assert batch.get(none_on_exception=True) == {"bill": bill, "ghost": None}
    result = batch.get(return_exceptions=True)
    assert result["bill"] == bill and isinstance(result["ghost"], User.DoesNotExist)


class UserOnOtherDatabase(InstanceCache):
    model = User
    key_fields = ("username",)
    using = "other"


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_using_chooses_the_database(queries: Any) -> None:
    User.objects.using("other").create(username="far", name="Far")
    assert UserOnOtherDatabase("far").get_queryset().db == "other"
    assert UserOnOtherDatabase("far").resolve().name == "Far"
    with pytest.raises(User.DoesNotExist):
        UserCacheOnUsername("far").resolve()  # the router's choice: the default database
    assert UserOnOtherDatabase("far").key != UserCacheOnUsername("far").key
    with queries("other") as q:
        assert UserOnOtherDatabase("far").resolve().name == "Far"
    assert q.count == 0
    User.objects.using("other").filter(username="far").update(name="Farther")
    assert UserOnOtherDatabase("far").resolve().name == "Farther"


def test_every_model_has_model_cache(queries: Any) -> None:
    from django.contrib.auth.models import User as AuthUser

    bob = AuthUser.objects.create(username="bob")
    assert AuthUser.cache.get(pk=bob.pk) == bob
    with queries() as q:
        assert AuthUser.cache.get(id=bob.pk) == bob
    assert q.count == 0


def test_id_on_a_multi_table_child_means_its_primary_key(queries: Any) -> None:
    """A child's primary key is ``place_ptr``; ``id`` (the parent's key, the same value) is
    accepted as Django's lookups accept it, and shares the value of ``pk``."""
    from tests.testapp.models import Place, Restaurant

    r = Restaurant.objects.create(name="Roma", serves_pizza=True)
    assert Restaurant.cache.get(id=r.id) == r
    with queries() as q:
        assert Restaurant.cache.get(pk=r.pk).name == "Roma"
        assert Restaurant.cache.get(place_ptr=r.pk).name == "Roma"
    assert q.count == 0
    Place.objects.filter(pk=r.pk).update(name="Milano")  # the parent's table
    assert Restaurant.cache.get(id=r.id).name == "Milano"
    assert Place.cache.get(id=r.id).name == "Milano"
