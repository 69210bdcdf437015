"""A radiologist explores a PACS in a real Chromium: server, patient, study, series with its
preview (a real image), instance; at a desktop's width and a phone's."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from adit.core.tests.asgi_server import AsgiServer
from adit.core.tests.browser import log_in
from adit.core.tests.factories import grant, server_for

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("width", [1280, 390])
def test_walk_from_server_to_instance_with_a_real_preview(
    page: Page, explorer_user, orthanc1, orthanc1_studies, width
):
    server = server_for(orthanc1, name="Hospital PACS")
    grant(server, explorer_user.active_group, source=True)
    study = next(s for s in orthanc1_studies if any(x.modality == "CT" for x in s.series))
    series = next(s for s in study.series if s.modality == "CT")
    app_server = AsgiServer()
    try:
        page.set_viewport_size({"width": width, "height": 900})
        log_in(page, app_server.url)
        page.goto(app_server.url + "/dicom-explorer/")
        page.get_by_test_id("server").select_option(str(server.pk))
        page.get_by_test_id("explore-button").click()
        expect(page.get_by_test_id("server-fields")).to_contain_text(orthanc1.ae_title)

        page.get_by_test_id("patients-link").click()
        page.get_by_role("link", name=study.patient_id, exact=True).first.click()
        expect(page.get_by_test_id("patient-fields")).to_contain_text(
            study.patient_name.split("^")[0]
        )
        date = f"{study.study_date[:4]}-{study.study_date[4:6]}-{study.study_date[6:]}"
        page.get_by_test_id("study-table").get_by_role("link", name=date).first.click()
        expect(page.get_by_test_id("study-fields")).to_contain_text(study.study_instance_uid)

        page.get_by_test_id("series-table").get_by_role(
            "link", name=str(series.series_number), exact=True
        ).click()
        image = page.get_by_test_id("preview-image")
        expect(image).to_be_visible(timeout=30_000)
        source = image.get_attribute("src") or ""
        png = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        low, high = png.convert("L").getextrema()
        assert isinstance(low, int) and isinstance(high, int)
        assert png.format == "PNG" and high - low > 50
        rendered_width = image.evaluate("element => element.getBoundingClientRect().width")
        assert rendered_width <= width
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")

        page.get_by_test_id("instance-row").first.get_by_role("link").click()
        expect(page.get_by_test_id("attribute-table")).to_contain_text("SOPInstanceUID")
        page.screenshot(path=f"/tmp/explorer-{width}.png", full_page=True)
    finally:
        app_server.stop()
