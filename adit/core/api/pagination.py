"""One way to page through every list: ``?limit=&offset=`` with the total count."""

from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 1000
