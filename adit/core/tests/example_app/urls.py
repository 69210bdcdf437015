from adit.core.jobs.views import job_urlpatterns
from adit.core.tests.example_app.models import ExampleJob

app_name = "example_app"

urlpatterns = job_urlpatterns(ExampleJob)
