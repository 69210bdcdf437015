from adit.core.jobs.views import job_urlpatterns
from adit.core.tests.example_app.models import ExampleJob, ExampleTask

app_name = "example_app"

urlpatterns = job_urlpatterns(job_model=ExampleJob, task_model=ExampleTask)
