// The upload page: the chosen folder is read in this browser and summarized; on Upload every
// file is pseudonymized here (pseudonymizer.js) and sent on its own, a few at a time. The
// original values never leave the computer.
(function () {
  "use strict";

  const PARALLEL_READS = 4;
  const PARALLEL_UPLOADS = 3;
  const FAILURES_IN_A_ROW_TO_STOP = 3;
  const { NotDicom, readHeader, describe, createContext, pseudonymizeFile } =
    window.aditPseudonymizer;

  function formatBytes(bytes) {
    if (bytes < 1024 * 1024) {
      return `${(bytes / 1024).toFixed(1)} KB`;
    }
    if (bytes < 1024 * 1024 * 1024) {
      return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
    }
    return `${(bytes / 1024 / 1024 / 1024).toFixed(2)} GB`;
  }

  function plural(count, singular, pluralForm = `${singular}s`) {
    return `${count} ${count === 1 ? singular : pluralForm}`;
  }

  function formatDate(date) {
    return /^\d{8}$/.test(date) ? `${date.slice(0, 4)}-${date.slice(4, 6)}-${date.slice(6)}` : date;
  }

  // Every file under a dropped item; directories are read to the end (readEntries answers in
  // batches).
  async function filesOfEntry(entry, path = "") {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      return [{ file, path: path + entry.name }];
    }
    const reader = entry.createReader();
    const files = [];
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) {
        return files;
      }
      for (const child of batch) {
        files.push(...(await filesOfEntry(child, `${path}${entry.name}/`)));
      }
    }
  }

  function csrfToken(form) {
    const input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  async function answerOf(response) {
    try {
      return await response.json();
    } catch {
      return {};
    }
  }

  // What the page shows of one choice of files and its upload; Clear starts again from here.
  function freshState() {
    return {
      readCount: 0,
      readTotal: 0,
      patients: [],
      studies: [],
      seriesCount: 0,
      modalities: "",
      fileCount: 0,
      totalBytes: 0,
      skippedCount: 0,
      unreadable: [],
      generalError: "",
      done: 0,
      bytesSent: 0,
      startedAt: 0,
      now: 0,
      stopping: false,
      stoppedOnPurpose: false,
      fileErrors: [],
      message: "",
      messageKind: "info",
      jobUrl: "",
    };
  }

  function uploadComponent() {
    // Kept out of Alpine's reactive state: thousands of files need no proxies.
    let dicomFiles = [];
    let studyModalities = new Map();
    let controllers = new Set();
    let context = null;
    let finishUrl = "";
    let generation = 0;
    let errorCount = 0;

    return {
      phase: "empty", // empty, reading, ready, starting, uploading, finishing, finished
      pageProblem: "",
      dragging: false,
      blocked: false,
      ...freshState(),

      init() {
        this.profile = JSON.parse(document.getElementById("upload-profile").textContent);
        this.blocked = this.$root.dataset.blocked === "1";
        if (!window.isSecureContext || !window.crypto?.subtle) {
          // Browsers offer the keyed hashes the pseudonymizer needs to secure pages only.
          this.blocked = true;
          this.pageProblem =
            "This page must be opened over HTTPS: only there may it pseudonymize files.";
        }
      },

      // -- Choosing ---------------------------------------------------------------------------

      chooseFiles(event) {
        const files = Array.from(event.target.files || [], (file) => ({
          file,
          path: file.webkitRelativePath || file.name,
        }));
        event.target.value = "";
        this.read(files);
      },

      dragOver(event) {
        if (this.canChoose) {
          event.dataTransfer.dropEffect = "copy";
          this.dragging = true;
        }
      },

      dragLeave() {
        this.dragging = false;
      },

      async drop(event) {
        this.dragging = false;
        if (!this.canChoose) {
          return;
        }
        // Entries must be taken before the first await: the drop's data is gone after it.
        const entries = Array.from(event.dataTransfer.items || [])
          .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
          .filter(Boolean);
        let files;
        if (entries.length) {
          files = [];
          for (const entry of entries) {
            files.push(...(await filesOfEntry(entry)));
          }
        } else {
          files = Array.from(event.dataTransfer.files || [], (file) => ({ file, path: file.name }));
        }
        this.read(files);
      },

      // -- Reading ----------------------------------------------------------------------------

      async read(files) {
        if (!files.length) {
          return;
        }
        this.reset();
        const reading = ++generation;
        this.phase = "reading";
        this.readTotal = files.length;
        const found = [];
        const unreadable = [];
        let skipped = 0;
        let next = 0;
        const reader = async () => {
          while (next < files.length && reading === generation) {
            const entry = files[next++];
            try {
              const header = await readHeader(entry.file);
              found.push({ ...entry, ...describe(header) });
            } catch (error) {
              if (error instanceof NotDicom) {
                skipped += 1;
              } else {
                unreadable.push({ key: entry.path, label: `${entry.path}: ${error.message}` });
              }
            }
            this.readCount += 1;
          }
        };
        await Promise.all(Array.from({ length: PARALLEL_READS }, reader));
        if (reading !== generation) {
          return;
        }
        this.summarize(found, skipped, unreadable);
        this.phase = "ready";
        // On a phone the summary is below the fold.
        this.$nextTick(() => this.$refs.summary.scrollIntoView({ block: "nearest" }));
      },

      summarize(found, skipped, unreadable) {
        const patients = new Map();
        const studies = new Map();
        const series = new Set();
        const modalities = new Set();
        studyModalities = new Map();
        for (const file of found) {
          const patientKey = JSON.stringify([file.patientId, file.patientName, file.birthDate]);
          if (!patients.has(patientKey)) {
            const born = file.birthDate ? `, born ${formatDate(file.birthDate)}` : "";
            const label = `${file.patientName || "(no name)"} (ID ${file.patientId || "none"}${born})`;
            patients.set(patientKey, { key: patientKey, label });
          }
          if (!studies.has(file.studyUid)) {
            studies.set(file.studyUid, {
              date: file.studyDate,
              description: file.studyDescription,
              series: new Set(),
              files: 0,
            });
            studyModalities.set(file.studyUid, new Set());
          }
          const study = studies.get(file.studyUid);
          study.series.add(file.seriesUid);
          study.files += 1;
          series.add(file.seriesUid);
          if (file.modality) {
            modalities.add(file.modality);
            studyModalities.get(file.studyUid).add(file.modality);
          }
        }
        dicomFiles = found;
        this.patients = [...patients.values()];
        this.studies = [...studies.entries()].map(([uid, study]) => ({
          key: uid,
          label:
            `${formatDate(study.date) || "No date"} · ${study.description || "(no description)"} · ` +
            `${[...studyModalities.get(uid)].sort().join(", ") || "no modality"} · ` +
            `${plural(study.series.size, "series", "series")}, ${plural(study.files, "file")}`,
        }));
        this.seriesCount = series.size;
        this.modalities = [...modalities].sort().join(", ");
        this.fileCount = found.length;
        this.totalBytes = found.reduce((sum, file) => sum + file.file.size, 0);
        this.skippedCount = skipped;
        this.unreadable = unreadable;
      },

      // -- Sending ----------------------------------------------------------------------------

      async upload() {
        if (!this.canUpload) {
          return;
        }
        const form = this.$refs.form;
        this.clearFieldErrors();
        const data = new FormData(form);
        data.set("files_total", String(this.fileCount));
        data.set("files_skipped", String(this.skippedCount));
        data.set("files_unreadable", String(this.unreadable.length));
        this.phase = "starting";
        let response;
        try {
          response = await fetch(form.action, {
            method: "POST",
            body: data,
            headers: { "X-CSRFToken": csrfToken(form), Accept: "application/json" },
            credentials: "same-origin",
          });
        } catch (error) {
          this.phase = "ready";
          this.generalError = `The server cannot be reached (${error.message}).`;
          return;
        }
        const answer = await answerOf(response);
        if (response.status !== 201) {
          this.phase = "ready";
          if (response.status === 400 && answer.errors) {
            this.showFieldErrors(answer.errors);
          } else {
            this.generalError =
              answer.error || `The server refused the upload (HTTP ${response.status}).`;
          }
          return;
        }
        finishUrl = answer.finish_url;
        try {
          context = await createContext(this.profile, {
            key: answer.key,
            pseudonym: answer.pseudonym,
            trialProtocolId: answer.trial_protocol_id,
            trialProtocolName: answer.trial_protocol_name,
          });
        } catch (error) {
          // The job exists: it ends as stopped, with nothing sent.
          this.stoppedOnPurpose = true;
          this.listError(`The files cannot be pseudonymized here (${error.message}).`);
          await this.finish();
          return;
        }
        context.fileUrl = answer.file_url;
        context.csrfToken = csrfToken(form);
        this.jobUrl = answer.job_url;
        this.phase = "uploading";
        this.startedAt = performance.now();
        this.now = this.startedAt;
        await this.sendAll();
        await this.finish();
      },

      async sendAll() {
        let next = 0;
        let failuresInARow = 0;
        const sender = async () => {
          while (!this.stopping && next < dicomFiles.length) {
            const entry = dicomFiles[next++];
            const outcome = await this.send(entry);
            if (outcome === "failed") {
              failuresInARow += 1;
              if (failuresInARow >= FAILURES_IN_A_ROW_TO_STOP && !this.stopping) {
                failedTooOften = true;
                this.abortAll();
              }
            } else if (outcome !== "aborted") {
              failuresInARow = 0;
            }
          }
        };
        let failedTooOften = false;
        await Promise.all(Array.from({ length: PARALLEL_UPLOADS }, sender));
        if (failedTooOften) {
          this.listError(
            `The destination failed ${FAILURES_IN_A_ROW_TO_STOP} times in a row, so the ` +
              `upload was stopped: ${plural(this.fileCount - this.done, "file")} not sent.`,
          );
        }
      },

      // Sends one file; answers "stored", "refused", "failed", "stopped" or "aborted".
      async send(entry) {
        let blob;
        try {
          blob = await pseudonymizeFile(context, entry.file);
        } catch (error) {
          this.listError(`${entry.path}: not sent, ${error.message}`);
          this.countDone(0);
          return "refused";
        }
        if (this.stopping) {
          return "aborted";
        }
        const data = new FormData();
        const modalities = [...(studyModalities.get(entry.studyUid) || [])].sort().join(",");
        data.append("study_modalities", modalities);
        // Never the original name: paths on CDs carry patients' names.
        data.append("file", blob, "instance.dcm");
        const controller = new AbortController();
        controllers.add(controller);
        let response;
        try {
          response = await fetch(context.fileUrl, {
            method: "POST",
            body: data,
            headers: { "X-CSRFToken": context.csrfToken, Accept: "application/json" },
            credentials: "same-origin",
            signal: controller.signal,
          });
        } catch (error) {
          if (this.stopping) {
            return "aborted";
          }
          this.listError(`${entry.path}: not sent (${error.message}).`);
          this.countDone(0);
          return "failed";
        } finally {
          controllers.delete(controller);
        }
        const answer = await answerOf(response);
        if (response.status === 200) {
          this.countDone(blob.size);
          return "stored";
        }
        if (response.status === 409) {
          // Canceled on the job's page.
          this.listError(answer.error || "The upload was stopped.");
          this.stoppedOnPurpose = true;
          this.abortAll();
          return "stopped";
        }
        const reason = answer.error || `HTTP ${response.status}`;
        this.listError(`${entry.path}: ${reason}`);
        this.countDone(0);
        return response.status === 422 ? "refused" : "failed";
      },

      listError(label) {
        errorCount += 1;
        this.fileErrors.push({ key: errorCount, label });
      },

      countDone(bytes) {
        this.done += 1;
        this.bytesSent += bytes;
        this.now = performance.now();
      },

      abortAll() {
        this.stopping = true;
        for (const controller of controllers) {
          controller.abort();
        }
      },

      stop() {
        if (this.phase === "uploading") {
          this.stoppedOnPurpose = true;
          this.abortAll();
        }
      },

      async finish() {
        // Urlencoded: Django refuses a multipart body without parts.
        const data = new URLSearchParams();
        if (this.stoppedOnPurpose) {
          data.append("stopped", "1");
        }
        this.phase = "finishing";
        let answer = {};
        try {
          const response = await fetch(finishUrl, {
            method: "POST",
            body: data,
            headers: { "X-CSRFToken": csrfToken(this.$refs.form), Accept: "application/json" },
            credentials: "same-origin",
          });
          answer = await answerOf(response);
        } catch (error) {
          answer = { message: `The server cannot be reached (${error.message}).` };
        }
        this.message = answer.message || "The upload ended.";
        if (/^Upload finished:/.test(this.message)) {
          this.messageKind = "success";
        } else if (/^Upload (stopped|finished with problems)/.test(this.message)) {
          this.messageKind = "warning";
        } else {
          this.messageKind = "danger";
        }
        this.phase = "finished";
      },

      clear() {
        if (this.phase === "uploading" || this.phase === "starting" || this.phase === "finishing") {
          return;
        }
        this.reset();
        this.clearFieldErrors();
      },

      reset() {
        generation += 1;
        dicomFiles = [];
        studyModalities = new Map();
        controllers = new Set();
        context = null;
        finishUrl = "";
        Object.assign(this, { phase: "empty", ...freshState() });
      },

      // -- Errors of the form -----------------------------------------------------------------

      clearFieldErrors() {
        this.generalError = "";
        for (const slot of this.$refs.form.querySelectorAll("[data-error-for]")) {
          slot.textContent = "";
        }
        for (const field of this.$refs.form.querySelectorAll(".is-invalid")) {
          field.classList.remove("is-invalid");
        }
      },

      showFieldErrors(errors) {
        const general = [];
        for (const [name, messages] of Object.entries(errors)) {
          const text = messages.map((error) => error.message).join(" ");
          const slot = this.$refs.form.querySelector(`[data-error-for="${name}"]`);
          const field = this.$refs.form.querySelector(`[name="${name}"]`);
          if (slot && field) {
            slot.textContent = text;
            field.classList.add("is-invalid");
          } else {
            general.push(text);
          }
        }
        this.generalError = general.join(" ");
      },

      // -- What the template shows ------------------------------------------------------------

      get canChoose() {
        return this.phase === "empty" || this.phase === "ready" || this.phase === "finished";
      },
      get cannotChoose() {
        return !this.canChoose;
      },
      get chooseButtonClass() {
        return this.canChoose ? "" : "disabled";
      },
      get isReading() {
        return this.phase === "reading";
      },
      get hasSummary() {
        return this.phase !== "empty" && this.phase !== "reading";
      },
      get isRefused() {
        return this.patients.length > 1;
      },
      get canUpload() {
        return this.phase === "ready" && !this.blocked && !this.isRefused && this.fileCount > 0;
      },
      get cannotUpload() {
        return !this.canUpload;
      },
      get isSending() {
        return (
          this.phase === "uploading" || this.phase === "starting" || this.phase === "finishing"
        );
      },
      get cannotStop() {
        return this.phase !== "uploading" || this.stopping;
      },
      get cannotClear() {
        return this.phase === "empty" || this.isSending;
      },
      get hasProgress() {
        return ["uploading", "finishing", "finished"].includes(this.phase) && this.startedAt > 0;
      },
      get isFinished() {
        return this.phase === "finished";
      },
      get hasPageProblem() {
        return this.pageProblem !== "";
      },
      get hasGeneralError() {
        return this.generalError !== "";
      },
      get hasUnreadable() {
        return this.unreadable.length > 0;
      },
      get hasFileErrors() {
        return this.fileErrors.length > 0;
      },
      get hasNoDicom() {
        return this.hasSummary && this.fileCount === 0;
      },
      get dropZoneClass() {
        return this.dragging ? "border-primary bg-primary-subtle" : "";
      },
      get readingText() {
        return `Reading files in this browser: ${this.readCount} of ${this.readTotal}…`;
      },
      get patientsTitle() {
        return this.isRefused ? "Patients" : "Patient";
      },
      get refusalText() {
        return `Upload refused: the files belong to ${this.patients.length} patients. Upload the files of one patient at a time.`;
      },
      get studiesTitle() {
        return this.studies.length === 1 ? "Study" : `Studies (${this.studies.length})`;
      },
      get seriesText() {
        return plural(this.seriesCount, "series", "series");
      },
      get modalitiesText() {
        return this.modalities || "none";
      },
      get filesText() {
        return `${plural(this.fileCount, "DICOM file")}, ${formatBytes(this.totalBytes)}`;
      },
      get skippedText() {
        return `${plural(this.skippedCount, "file")} (not DICOM: DICOMDIR, viewers, texts)`;
      },
      get unreadableText() {
        return plural(this.unreadable.length, "file");
      },
      get progressPercent() {
        return this.fileCount ? Math.round((100 * this.done) / this.fileCount) : 0;
      },
      get progressStyle() {
        return `width: ${this.progressPercent}%`;
      },
      get progressText() {
        const seconds = Math.max((this.now - this.startedAt) / 1000, 0.001);
        const rate = this.bytesSent / 1024 / 1024 / seconds;
        return `${this.done} of ${this.fileCount} files · ${rate.toFixed(1)} MB/s`;
      },
      get messageClass() {
        return `alert alert-${this.messageKind}`;
      },
      get uploadButtonText() {
        return this.phase === "starting" ? "Starting…" : "Upload";
      },
    };
  }

  document.addEventListener("alpine:init", () => {
    window.Alpine.data("upload", uploadComponent);
  });
})();
