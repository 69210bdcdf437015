from adit.core.jobs.views import job_urlpatterns
from adit.core.tests.query_app.models import QueryJob

app_name = "example_queries"

urlpatterns = job_urlpatterns(QueryJob)
