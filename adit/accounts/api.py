from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class CurrentUserView(APIView):
    """Who the request authenticates as; lets a script check its token."""

    @extend_schema(
        responses=inline_serializer(
            "CurrentUser",
            {
                "username": serializers.CharField(),
                "active_group": serializers.CharField(allow_null=True),
                "is_staff": serializers.BooleanField(),
                "token_read_only": serializers.BooleanField(),
            },
        )
    )
    def get(self, request: Request) -> Response:
        user = request.user
        active_group = getattr(user, "active_group", None)
        return Response(
            {
                "username": user.get_username(),
                "active_group": active_group.name if active_group else None,
                "is_staff": bool(getattr(user, "is_staff", False)),
                "token_read_only": bool(getattr(request.auth, "read_only", False)),
            }
        )
