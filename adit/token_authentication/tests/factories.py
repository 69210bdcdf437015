from factory.declarations import LazyAttribute, LazyFunction, Sequence, SubFactory
from factory.django import DjangoModelFactory

from adit.accounts.tests.factories import UserFactory
from adit.token_authentication.models import Token, generate_plain_token, hash_token


class TokenFactory(DjangoModelFactory):
    """A token; pass ``plain_token`` to know the token a request has to send."""

    class Meta:
        model = Token

    class Params:
        plain_token = LazyFunction(generate_plain_token)

    owner = SubFactory(UserFactory)
    token_hashed = LazyAttribute(lambda token: hash_token(token.plain_token))
    fraction = LazyAttribute(lambda token: token.plain_token[:4])
    description = Sequence(lambda n: f"Script {n}")
    expires = None
