from django.contrib.auth.models import Group
from factory.declarations import LazyAttribute, PostGenerationMethodCall, Sequence
from factory.django import DjangoModelFactory
from factory.helpers import post_generation

from adit.accounts.models import User

PASSWORD = "correct-horse-battery"


class GroupFactory(DjangoModelFactory):
    class Meta:
        model = Group
        django_get_or_create = ("name",)

    name = Sequence(lambda n: f"Group {n}")


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = Sequence(lambda n: f"user{n}")
    email = LazyAttribute(lambda user: f"{user.username}@example.org")
    password = PostGenerationMethodCall("set_password", PASSWORD)

    @post_generation
    def groups(self: User, create, extracted, **kwargs):  # type: ignore[misc]
        if not create or not extracted:
            self.save()
            return
        self.groups.add(*extracted)
        self.active_group = extracted[0]
        self.save()
