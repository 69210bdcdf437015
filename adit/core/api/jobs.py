"""The job endpoints of every kind that has an API (``JobKind.api``): list and detail with the
tasks, creation through the kind's own serializer, and the job actions with the rules and
messages of the job pages. An app adds nothing here but how a job of its kind is created
and routes of its own.

    GET  /api/<name>/                  the user's jobs (staff: ``?all=true`` for everybody's)
    POST /api/<name>/                  a new job (needs the kind's add permission)
    GET  /api/<name>/<id>/             one job with its tasks
    POST /api/<name>/<id>/<action>/    cancel, resume, retry, restart (staff), verify (staff)
    GET  /api/<name>/<id>/<route>/     the kind's own routes (``JobApi.viewset_mixin``)
"""

from __future__ import annotations

import functools
from datetime import datetime

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action as route
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from adit.core.api.viewsets import AditViewSet
from adit.core.jobs import registry
from adit.core.jobs.registry import JobKind
from adit.core.jobs.statuses import FINAL_JOB_STATUSES, FINAL_TASK_STATUSES, JobStatus, TaskStatus
from adit.core.jobs.views import JOB_ACTIONS, Action
from adit.core.models import SectionLock

JOB_STATUS_NAMES = JobStatus.names
TASK_STATUS_NAMES = TaskStatus.names

# The job actions a script may take; "delete" stays with the pages (a job is a record).
API_ACTIONS = tuple(action for action in JOB_ACTIONS if action.name != "delete")


class StatusField(serializers.Field):
    """A status by its name ("IN_PROGRESS"), as scripts compare it, not its database code."""

    choices: type[JobStatus] | type[TaskStatus]

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value) -> str:
        return self.choices(value).name


@extend_schema_field({"type": "string", "enum": JOB_STATUS_NAMES})
class JobStatusField(StatusField):
    choices = JobStatus


@extend_schema_field({"type": "string", "enum": TASK_STATUS_NAMES})
class TaskStatusField(StatusField):
    choices = TaskStatus


class NamedRelatedField(serializers.SlugRelatedField):
    """A related node or project by its name, as people and scripts name them."""

    def __init__(self, **kwargs):
        kwargs.setdefault("slug_field", "name")
        kwargs["read_only"] = True
        kwargs.pop("queryset", None)
        super().__init__(**kwargs)


@functools.cache
def _task_serializer(kind: JobKind) -> type[serializers.ModelSerializer]:
    extra = kind.api.task_fields if kind.api else ()

    class TaskSerializer(serializers.ModelSerializer):
        status = TaskStatusField()
        source = serializers.CharField(source="source.name", read_only=True)
        progress = serializers.SerializerMethodField()
        serializer_related_field = NamedRelatedField

        class Meta:
            model = kind.task_model
            fields = (
                "id",
                "status",
                "message",
                "source",
                *extra,
                "attempts",
                "progress",
                "created",
                "start",
                "end",
            )

        def get_progress(self, task) -> dict:
            return {
                "done": task.progress_done,
                "total": task.progress_total,
                "unit": task.progress_unit,
            }

    TaskSerializer.__name__ = f"{kind.task_model.__name__}Serializer"
    return TaskSerializer


@functools.cache
def _job_serializer(kind: JobKind, with_tasks: bool) -> type[serializers.ModelSerializer]:
    extra = kind.api.job_fields if kind.api else ()
    task_serializer = _task_serializer(kind)

    class JobSerializer(serializers.ModelSerializer):
        serializer_related_field = NamedRelatedField
        status = JobStatusField()
        owner = serializers.CharField(source="owner.get_username", read_only=True)
        finished = serializers.SerializerMethodField()
        progress = serializers.SerializerMethodField()
        if with_tasks:
            tasks = task_serializer(many=True, read_only=True)

        class Meta:
            model = kind.job_model
            fields = (
                "id",
                "status",
                "message",
                "finished",
                "progress",
                "owner",
                "urgent",
                *extra,
                "created",
                "start",
                "end",
                *(("tasks",) if with_tasks else ()),
            )

        def get_finished(self, job) -> bool:
            return job.status in FINAL_JOB_STATUSES

        def get_progress(self, job) -> dict:
            """Tasks that reached a final status, of all tasks (annotated by the queryset)."""
            return {"processed": job.processed_tasks, "total": job.total_tasks, "unit": "tasks"}

    suffix = "Detail" if with_tasks else ""
    JobSerializer.__name__ = f"{kind.job_model.__name__}{suffix}Serializer"
    return JobSerializer


def _related(model, names: tuple[str, ...]) -> list[str]:
    """The names that are foreign keys of ``model``, to fetch with it in one query."""
    return [name for name in names if model._meta.get_field(name).many_to_one]


def _parse_moment(value: str, parameter: str) -> datetime | str:
    try:
        moment = parse_datetime(value) or parse_date(value)
    except ValueError:  # well-formed but impossible: 2024-02-30, 25:00
        moment = None
    if moment is None:
        raise ValidationError(
            {parameter: [f"Not a date or date and time (ISO 8601, e.g. 2024-01-31): {value!r}."]}
        )
    return moment.isoformat()


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, AditViewSet):
    """The jobs of one kind (``kind`` is set by ``job_viewset``)."""

    kind: JobKind

    def get_base_queryset(self) -> QuerySet:
        return self.filter_jobs(self.jobs(detail=self.action != "list"))

    def jobs(self, detail: bool) -> QuerySet:
        """The jobs the user may see, with their task counts (and tasks, for a detail)."""
        user = self.request.user
        if detail:
            jobs = self.kind.visible_jobs(user)
        else:
            show_all = self.request.query_params.get("all", "").lower() in ("1", "true")
            jobs = self.kind.jobs_for(user, all_users=show_all)
        api = self.kind.api
        assert api is not None
        jobs = jobs.annotate(
            total_tasks=Count("tasks"),
            processed_tasks=Count("tasks", filter=Q(tasks__status__in=FINAL_TASK_STATUSES)),
        ).order_by("-created", "-pk")
        jobs = jobs.select_related(*_related(self.kind.job_model, api.job_fields))
        if detail:
            related = _related(self.kind.task_model, ("source", *api.task_fields))
            tasks = self.kind.task_model.objects.select_related(*related).order_by("pk")
            jobs = jobs.prefetch_related(Prefetch("tasks", queryset=tasks))
        return jobs

    def detail_response(self, job_pk: int) -> dict:
        job = self.jobs(detail=True).get(pk=job_pk)
        serializer = _job_serializer(self.kind, with_tasks=True)
        return serializer(job, context=self.get_serializer_context()).data

    def filter_jobs(self, jobs: QuerySet) -> QuerySet:
        params = self.request.query_params
        if "status" in params:
            names = [name.strip().upper() for name in params["status"].split(",")]
            unknown = [name for name in names if name not in JobStatus.names]
            if unknown:
                choices = ", ".join(JobStatus.names)
                raise ValidationError(
                    {"status": [f"Unknown status {', '.join(unknown)}; one of {choices}."]}
                )
            jobs = jobs.filter(status__in=[JobStatus[name] for name in names])
        if "created_after" in params:
            jobs = jobs.filter(created__gte=_parse_moment(params["created_after"], "created_after"))
        if "created_before" in params:
            jobs = jobs.filter(
                created__lt=_parse_moment(params["created_before"], "created_before")
            )
        return jobs

    def get_serializer_class(self):
        if self.action == "create":
            assert self.kind.api is not None and self.kind.api.create_serializer is not None
            return self.kind.api.create_serializer
        return _job_serializer(self.kind, with_tasks=self.action != "list")

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, description="Comma-separated status names."),
            OpenApiParameter("created_after", str, description="ISO 8601 date or time."),
            OpenApiParameter("created_before", str, description="ISO 8601 date or time."),
            OpenApiParameter("all", bool, description="Staff: every user's jobs."),
        ]
    )
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    def section_lock_refusal(self) -> Response | None:
        """A 503 for a non-staff user while staff have locked the kind's section: its pages
        take no new jobs and no actions then (``SectionLockMiddleware``), nor does the API."""
        section = self.kind.section
        staff = getattr(self.request.user, "is_staff", False)
        if section is None or not section.lockable or staff:
            return None
        lock = SectionLock.objects.filter(namespace=section.namespace).first()
        if lock is None:
            return None
        reason = f" Reason: {lock.reason}" if lock.reason else ""
        detail = f"{section.label} is locked by staff for now. Please try again later.{reason}"
        return Response({"detail": detail}, status=status.HTTP_503_SERVICE_UNAVAILABLE)

    def perform_action(self, action: Action) -> Response:
        if refusal := self.section_lock_refusal():
            return refusal
        job = self.get_object()
        if action.staff_only and not getattr(self.request.user, "is_staff", False):
            raise PermissionDenied(f"Only staff may {action.label.lower()}.")
        getattr(job, action.method)()  # ActionNotAllowed is a 400 (api_exception_handler)
        return Response({"detail": action.message % job.pk, "job": self.detail_response(job.pk)})


class CreatableJobViewSet(JobViewSet):
    def create(self, request: Request, *args, **kwargs) -> Response:
        if refusal := self.section_lock_refusal():
            return refusal
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = serializer.save()
        return Response(self.detail_response(job.pk), status=status.HTTP_201_CREATED)


def _action_route(action: Action):
    def handler(self: JobViewSet, request: Request, pk: str | None = None) -> Response:
        return self.perform_action(action)

    handler.__name__ = action.name
    handler.__doc__ = f"{action.label}: {action.confirm}"
    documented = extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "JobActionDone",
                {"detail": serializers.CharField(), "job": serializers.DictField()},
            ),
            400: OpenApiResponse(description="The job's state does not allow the action."),
            403: OpenApiResponse(description="Staff only, or a read-only token."),
            404: OpenApiResponse(description="No such job of yours."),
        },
    )(handler)
    return route(detail=True, methods=["post"], url_path=action.name)(documented)


def _create_route(kind: JobKind):
    """``create``, described in the schema as it answers: with the new job's detail."""

    @extend_schema(responses={201: _job_serializer(kind, with_tasks=True)})
    def create(self: CreatableJobViewSet, request: Request, *args, **kwargs) -> Response:
        return CreatableJobViewSet.create(self, request, *args, **kwargs)

    create.__doc__ = f"A new {kind.job_model._meta.verbose_name} with its tasks, started."
    return create


def job_viewset(kind: JobKind) -> type[JobViewSet]:
    """The viewset of a kind's jobs, with creation when the kind has a create serializer and
    the kind's own routes."""
    assert kind.api is not None
    attributes: dict = {
        "kind": kind,
        "queryset": kind.job_model.objects.none(),  # for the schema; requests use their own
        **{action.name: _action_route(action) for action in API_ACTIONS},
    }
    base: type[JobViewSet] = JobViewSet
    if kind.api.create_serializer is not None:
        base = CreatableJobViewSet
        job_model = kind.job_model
        attributes["action_permissions"] = {
            "create": f"{job_model._meta.app_label}.add_{job_model._meta.model_name}"
        }
        attributes["create"] = _create_route(kind)
    bases = (base,) if kind.api.viewset_mixin is None else (kind.api.viewset_mixin, base)
    name = f"{kind.job_model.__name__}ViewSet"
    viewset = type(name, bases, attributes)
    assert issubclass(viewset, JobViewSet)
    return viewset


def api_kinds() -> list[JobKind]:
    return [kind for kind in registry.all_kinds() if kind.api is not None]
