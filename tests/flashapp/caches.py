"""The seeds' cache classes, discovered at startup like any app's ``caches.py``."""

from __future__ import annotations

from typing import Any

from freshcache import InstanceCache, ModelCacheManger, QuerysetCache
from tests.flashapp.models import Avatar, Flag, Participation, User


class UserCacheOnUsername(InstanceCache):
    model = User
    key_fields = ("username",)


class PrimaryAvatarCacheOnUser(InstanceCache):
    model = Avatar
    key_fields = ("user",)

    def get_instance(self, user: Any) -> Avatar | None:
        avatars = self.get_queryset().filter(user=user, primary=True)
        if avatars:
            return avatars[0]
        return None


class ParticipationCacheOnUserEvent(InstanceCache):
    model = Participation
    # Since only one Participation instance exists for a user and an event
    key_fields = ("user", "event")


class ParticipationListCacheOnUser(QuerysetCache):
    model = Participation
    key_fields = ("user",)


class ParticipatedEventIdListCacheOnUser(QuerysetCache):
    model = Participation
    key_fields = ("user",)

    def get_result(self, user: Any) -> Any:
        return self.get_queryset().filter(user=user).values_list("event", flat=True)


class ParticipationCountCacheOnUser(QuerysetCache):
    model = Participation
    key_fields = ("user",)

    def get_result(self, user: Any) -> int:
        return self.get_queryset().filter(user=user).count()


class FlagListCacheOnTarget(QuerysetCache):
    model = Flag
    key_fields = ("target",)


class ParticipationCacheManager(ModelCacheManger):  # the seed's spelling, as written
    model = Participation
    get_key_fields_list = [("user", "event")]
    filter_key_fields_list = [("user",), ("event",)]

    def get_count_for_user(self, user: Any) -> int:
        return ParticipationCountCacheOnUser(user).resolve()

    def get_event_id_list_for_user(self, user: Any) -> list[int]:
        return ParticipatedEventIdListCacheOnUser(user).resolve()
