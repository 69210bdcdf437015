from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission


class ActiveGroupBackend(ModelBackend):
    """Group permissions come only from the user's active group, not from all their groups.

    A user who is in a research group and a clinical group thereby acts with exactly one role
    at a time. The user's own permissions and superuser status work as usual.
    """

    def _get_group_permissions(self, user_obj):
        active_group_id = getattr(user_obj, "active_group_id", None)
        if active_group_id is None:
            return Permission.objects.none()
        return Permission.objects.filter(group__pk=active_group_id, group__user=user_obj)
