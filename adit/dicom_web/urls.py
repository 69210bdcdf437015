"""The API's two layouts under ``/api/dicom-web/<AE title>/``: upstream's prefixed paths
(``qidors/…``, ``wadors/…``, ``stowrs/…``), which adit-client calls, and the single root
PS3.18 lays out (``studies…``), which most DICOMweb clients take as their one base URL.
No trailing slashes, as DICOMweb clients build the paths themselves."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required  # pyright: ignore
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from . import frames, nifti, qido, stow, wado

app_name = "dicom_web"

_ae = "<str:ae_title>/"
_study = "studies/<str:study_uid>"
_series = f"{_study}/series/<str:series_uid>"
_instance = f"{_series}/instances/<str:sop_uid>"
_frames = f"{_instance}/frames/<str:frames>"


def by_method(**views):
    """One path, a view per HTTP method (the standard root serves searches and stores, and
    retrievals and stores, on the same paths)."""
    allowed = sorted(views)

    @login_not_required  # the API authenticates itself: a 401 for a script, not a redirect
    @csrf_exempt  # each view checks CSRF itself for a session login (DRF)
    def dispatch(request, *args, **kwargs):
        method = "GET" if request.method == "HEAD" else request.method
        view = views.get(method)
        if view is None:
            response = JsonResponse(
                {"detail": f"Method {request.method} is not allowed here."}, status=405
            )
            response["Allow"] = ", ".join(allowed)
            return response
        return view(request, *args, **kwargs)

    dispatch.views = views  # pyright: ignore[reportFunctionMemberAccess]
    return dispatch


study_search = login_not_required(qido.StudySearch.as_view())
series_search = login_not_required(qido.SeriesSearch.as_view())
instance_search = login_not_required(qido.InstanceSearch.as_view())
store = login_not_required(stow.StoreInstances.as_view())
retrieval = login_not_required(wado.InstancesRetrieval.as_view())
metadata = login_not_required(wado.MetadataRetrieval.as_view())
nifti_files = login_not_required(nifti.NiftiRetrieval.as_view())
frames_retrieval = login_not_required(frames.FramesRetrieval.as_view())

urlpatterns = [
    # Upstream's layout.
    path(f"{_ae}qidors/studies", study_search, name="qido_studies"),
    path(f"{_ae}qidors/{_study}/series", series_search, name="qido_series"),
    path(f"{_ae}qidors/{_study}/instances", instance_search, name="qido_study_instances"),
    path(f"{_ae}qidors/{_series}/instances", instance_search, name="qido_instances"),
    path(f"{_ae}stowrs/studies", store, name="stow_studies"),
    path(f"{_ae}stowrs/{_study}", store, name="stow_study"),
    path(f"{_ae}wadors/{_study}", retrieval, name="wado_study"),
    path(f"{_ae}wadors/{_series}", retrieval, name="wado_series"),
    path(f"{_ae}wadors/{_instance}", retrieval, name="wado_instance"),
    path(f"{_ae}wadors/{_study}/metadata", metadata, name="wado_study_metadata"),
    path(f"{_ae}wadors/{_series}/metadata", metadata, name="wado_series_metadata"),
    path(f"{_ae}wadors/{_instance}/metadata", metadata, name="wado_instance_metadata"),
    path(f"{_ae}wadors/{_frames}", frames_retrieval, name="wado_instance_frames"),
    path(f"{_ae}wadors/{_study}/nifti", nifti_files, name="wado_study_nifti"),
    path(f"{_ae}wadors/{_series}/nifti", nifti_files, name="wado_series_nifti"),
    path(f"{_ae}wadors/{_instance}/nifti", nifti_files, name="wado_instance_nifti"),
    # The PS3.18 root.
    path(f"{_ae}studies", by_method(GET=study_search, POST=store), name="studies"),
    path(f"{_ae}{_study}/series", by_method(GET=series_search), name="series_of_study"),
    path(f"{_ae}{_study}/instances", by_method(GET=instance_search), name="study_instances"),
    path(f"{_ae}{_series}/instances", by_method(GET=instance_search), name="instances"),
    path(f"{_ae}{_study}", by_method(GET=retrieval, POST=store), name="study"),
    path(f"{_ae}{_series}", by_method(GET=retrieval), name="series"),
    path(f"{_ae}{_instance}", by_method(GET=retrieval), name="instance"),
    path(f"{_ae}{_study}/metadata", by_method(GET=metadata), name="study_metadata"),
    path(f"{_ae}{_series}/metadata", by_method(GET=metadata), name="series_metadata"),
    path(f"{_ae}{_instance}/metadata", by_method(GET=metadata), name="instance_metadata"),
    path(f"{_ae}{_frames}", by_method(GET=frames_retrieval), name="instance_frames"),
    path(f"{_ae}{_study}/nifti", by_method(GET=nifti_files), name="study_nifti"),
    path(f"{_ae}{_series}/nifti", by_method(GET=nifti_files), name="series_nifti"),
    path(f"{_ae}{_instance}/nifti", by_method(GET=nifti_files), name="instance_nifti"),
]
