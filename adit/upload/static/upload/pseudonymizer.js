// The upload page's pseudonymizer: reads the header of a DICOM file in this browser and
// rewrites it to the profile the server serves with the page (profile_for_browsers in
// adit/core/transfer/pseudonymizer.py, the table the server's own pseudonymizer applies). The
// server checks every file it receives again and refuses one that still identifies the patient.
//
// Only the header of a file is read into memory and rewritten (with dcmjs, in the file's own
// transfer syntax); the pixel data is sent as the slice of the file it is, untouched, so a file
// of 2 GB costs no more memory than a small one.
(function () {
  "use strict";

  const IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2";
  const EXPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2.1";
  const EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2";
  const DEFLATED = "1.2.840.10008.1.2.1.99";
  const DICOMDIR_CLASS = "1.2.840.10008.1.3.10";
  const UNDEFINED_LENGTH = 0xffffffff;
  const PIXEL_DATA = "7FE00010";
  // Value representations whose explicit-VR header has a 4-byte length (PS3.5 7.1.2).
  const LONG_VRS = new Set([
    "OB",
    "OD",
    "OF",
    "OL",
    "OV",
    "OW",
    "SQ",
    "SV",
    "UC",
    "UN",
    "UR",
    "UT",
    "UV",
  ]);
  const VALID_VRS = new Set([
    ...LONG_VRS,
    ..."AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split(" "),
  ]);
  // dcmjs names the dictionary's "US or SS" and "OB or OW" this way; pydicom, which reads the
  // files on the server, resolves them to one of the two, both of which the table keeps.
  const AMBIGUOUS_VRS = { xs: "US", ox: "OW", lt: "OW", up: "UL", na: "UN" };
  const TEXT_VRS = new Set(["SH", "LO", "ST", "LT", "UT", "UC"]);
  // Most headers fit; a file whose header is larger is read again with more.
  const FIRST_READ = 256 * 1024;

  const TAGS = {
    specificCharacterSet: "00080005",
    sopClassUid: "00080016",
    sopInstanceUid: "00080018",
    studyDate: "00080020",
    studyTime: "00080030",
    modality: "00080060",
    studyDescription: "00081030",
    seriesDescription: "0008103E",
    codeValue: "00080100",
    codingSchemeDesignator: "00080102",
    codeMeaning: "00080104",
    patientName: "00100010",
    patientId: "00100020",
    patientBirthDate: "00100030",
    patientAge: "00101010",
    patientComments: "00104000",
    trialProtocolId: "00120020",
    trialProtocolName: "00120021",
    patientIdentityRemoved: "00120062",
    deidentificationMethod: "00120063",
    deidentificationMethodCodes: "00120064",
    studyInstanceUid: "0020000D",
    seriesInstanceUid: "0020000E",
    temporalInformationModified: "00280303",
    mediaStorageSopClassUid: "00020002",
    mediaStorageSopInstanceUid: "00020003",
    transferSyntaxUid: "00020010",
  };
  const REQUIRED_UIDS = {
    SOPClassUID: TAGS.sopClassUid,
    SOPInstanceUID: TAGS.sopInstanceUid,
    StudyInstanceUID: TAGS.studyInstanceUid,
    SeriesInstanceUID: TAGS.seriesInstanceUid,
  };

  class NotDicom extends Error {}
  class Unreadable extends Error {}
  class NeedMoreBytes extends Error {}

  // -- Character sets ------------------------------------------------------------------------

  // Single-byte and Unicode character sets (PS3.3 C.12.1.1.2) by their TextDecoder labels.
  const DECODER_LABELS = {
    "": "windows-1252",
    ISO_IR_6: "windows-1252",
    ISO_IR_13: "shift_jis",
    ISO_IR_100: "windows-1252",
    ISO_IR_101: "iso-8859-2",
    ISO_IR_109: "iso-8859-3",
    ISO_IR_110: "iso-8859-4",
    ISO_IR_126: "iso-8859-7",
    ISO_IR_127: "iso-8859-6",
    ISO_IR_138: "iso-8859-8",
    ISO_IR_144: "iso-8859-5",
    ISO_IR_148: "windows-1254",
    ISO_IR_166: "windows-874",
    ISO_IR_192: "utf-8",
    GB18030: "gb18030",
    GBK: "gbk",
  };
  // ISO 2022 terms: which code element (G0 or G1) each designates, decoded how.
  const ISO_2022_TERMS = {
    "ISO 2022 IR 6": { g0: "ascii" },
    "ISO 2022 IR 13": { g0: "ascii", g1: "shift_jis" },
    "ISO 2022 IR 87": { g0: "jis0208" },
    "ISO 2022 IR 159": { g0: "jis0212" },
    "ISO 2022 IR 100": { g1: "windows-1252" },
    "ISO 2022 IR 101": { g1: "iso-8859-2" },
    "ISO 2022 IR 109": { g1: "iso-8859-3" },
    "ISO 2022 IR 110": { g1: "iso-8859-4" },
    "ISO 2022 IR 126": { g1: "iso-8859-7" },
    "ISO 2022 IR 127": { g1: "iso-8859-6" },
    "ISO 2022 IR 138": { g1: "iso-8859-8" },
    "ISO 2022 IR 144": { g1: "iso-8859-5" },
    "ISO 2022 IR 148": { g1: "windows-1254" },
    "ISO 2022 IR 166": { g1: "windows-874" },
    "ISO 2022 IR 149": { g1: "euc-kr" },
    "ISO 2022 IR 58": { g1: "gb18030" },
  };
  // Escape sequences (after ESC) and the term whose code element they designate.
  const ESCAPES = {
    "(B": "ISO 2022 IR 6",
    "(J": "ISO 2022 IR 13",
    ")I": "ISO 2022 IR 13",
    $B: "ISO 2022 IR 87",
    "$@": "ISO 2022 IR 87",
    "$(D": "ISO 2022 IR 159",
    "-A": "ISO 2022 IR 100",
    "-B": "ISO 2022 IR 101",
    "-C": "ISO 2022 IR 109",
    "-D": "ISO 2022 IR 110",
    "-F": "ISO 2022 IR 126",
    "-G": "ISO 2022 IR 127",
    "-H": "ISO 2022 IR 138",
    "-L": "ISO 2022 IR 144",
    "-M": "ISO 2022 IR 148",
    "-T": "ISO 2022 IR 166",
    "$)C": "ISO 2022 IR 149",
    "$)A": "ISO 2022 IR 58",
  };
  // After these the initial character set is in force again (PS3.5 6.1.2.5.3).
  const DELIMITERS = new Set([0x09, 0x0a, 0x0c, 0x0d, 0x3d, 0x5c, 0x5e]);
  const textDecoders = new Map();

  function textDecoder(label) {
    if (!textDecoders.has(label)) {
      textDecoders.set(label, new TextDecoder(label));
    }
    return textDecoders.get(label);
  }

  // A decoder (dcmjs calls its decode(DataView)) for the values of SpecificCharacterSet.
  function decoderFor(terms) {
    const values = terms.map((term) => String(term || "").trim());
    if (!values.some((value) => value.startsWith("ISO 2022"))) {
      const label = DECODER_LABELS[(values[0] || "").replace(/ /g, "_")];
      if (label === undefined) {
        throw new Unreadable(`Its character set ${values[0]} is unknown.`);
      }
      return textDecoder(label);
    }
    const designate = (state, term) => {
      const element = ISO_2022_TERMS[term];
      if (element === undefined) {
        throw new Unreadable(`Its character set ${term} is unknown.`);
      }
      return { ...state, ...element };
    };
    const first = values[0] ? values[0].replace(/^ISO_IR /, "ISO 2022 IR ") : "ISO 2022 IR 6";
    const initial = designate({ g0: "ascii", g1: "windows-1252" }, first);
    return {
      decode(view) {
        const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
        let state = initial;
        let text = "";
        let run = [];
        const flush = () => {
          text += decodeRun(Uint8Array.from(run), state);
          run = [];
        };
        for (let index = 0; index < bytes.length; index += 1) {
          const byte = bytes[index];
          if (byte === 0x1b) {
            flush();
            const escape = [3, 2]
              .map((length) =>
                String.fromCharCode(...bytes.subarray(index + 1, index + 1 + length)),
              )
              .find((sequence) => ESCAPES[sequence] !== undefined);
            if (escape === undefined) {
              throw new Unreadable(
                "A text value has an escape sequence of no known character set.",
              );
            }
            state = designate(state, ESCAPES[escape]);
            index += escape.length;
          } else {
            run.push(byte);
            const twoBytes = state.g0 === "jis0208" || state.g0 === "jis0212";
            if (!twoBytes && DELIMITERS.has(byte)) {
              flush();
              state = initial;
            }
          }
        }
        flush();
        return text;
      },
    };
  }

  function decodeRun(bytes, state) {
    let text = "";
    let start = 0;
    // Bytes below 0x80 belong to G0, the others to G1.
    while (start < bytes.length) {
      const high = bytes[start] >= 0x80;
      let end = start;
      while (end < bytes.length && bytes[end] >= 0x80 === high) {
        end += 1;
      }
      const part = bytes.subarray(start, end);
      if (high) {
        text += textDecoder(state.g1 || "windows-1252").decode(part);
      } else if (state.g0 === "jis0208" || state.g0 === "jis0212") {
        // The same two-byte codes with the high bit set are EUC-JP (JIS X 0212 after 0x8F).
        const euc = [];
        for (let index = 0; index < part.length; index += 2) {
          if (state.g0 === "jis0212") {
            euc.push(0x8f);
          }
          euc.push(part[index] | 0x80, (part[index + 1] ?? 0) | 0x80);
        }
        text += textDecoder("euc-jp").decode(Uint8Array.from(euc));
      } else {
        text += textDecoder("windows-1252").decode(part);
      }
      start = end;
    }
    return text;
  }

  // -- Reading -------------------------------------------------------------------------------

  const dcmjs = window.dcmjs;
  const { DicomMessage, DicomDict, ReadBufferStream, Tag, ValueRepresentation } = dcmjs.data;
  // What dcmjs complains of (an ambiguous VR, a value longer than its VR allows) this script
  // handles or passes on as the file has it; the page reports what matters.
  dcmjs.log.setLevel("silent");
  dcmjs.log.getLogger("validation.dcmjs").setLevel("silent");

  // dcmjs reads each sequence item with a fresh Latin-1 decoder and refuses ISO 2022 character
  // sets with more than one value; while this page reads a file, items are read by
  // readElements, with the character set in force.
  let decoderInForce = null;
  const dcmjsRead = DicomMessage._read;
  DicomMessage._read = function (stream, syntax, options) {
    if (decoderInForce === null) {
      return dcmjsRead.call(this, stream, syntax, options);
    }
    return readElements(stream, syntax).elements;
  };

  function hex4(number) {
    return number.toString(16).toUpperCase().padStart(4, "0");
  }

  // Reads data elements to the end of the stream or, at the top level, up to the pixel data.
  function readElements(stream, syntax, topLevel = null) {
    const outerDecoder = decoderInForce;
    stream.setDecoder(decoderInForce);
    const implicit = syntax === IMPLICIT_LITTLE_ENDIAN;
    const littleEndian = syntax !== EXPLICIT_BIG_ENDIAN;
    const elements = {};
    try {
      while (!stream.end()) {
        const header = peekHeader(stream, implicit, littleEndian, topLevel);
        if (topLevel && header.tag === PIXEL_DATA) {
          return { elements, pixelData: header };
        }
        let element;
        if (
          header.vr === "UN" &&
          (header.length === UNDEFINED_LENGTH || dictionaryVr(header.tag) === "SQ")
        ) {
          // A sequence its writer did not know: PS3.5 6.2.2 encodes it in implicit VR.
          stream.increment(header.valueStart - header.start);
          const endian = stream.isLittleEndian;
          stream.setEndian(true);
          const read = ValueRepresentation.createByTypeString("SQ").read(
            stream,
            header.length,
            IMPLICIT_LITTLE_ENDIAN,
          );
          stream.setEndian(endian);
          element = newElement("SQ", read.value);
        } else {
          const read = DicomMessage._readTag(stream, syntax);
          element = ValueRepresentation.addTagAccessors({ vr: read.vr.type });
          element.Value = read.values;
          element._rawValue = read.rawValues;
          if (header.length === 0) {
            // dcmjs reads an empty number as 0.
            element.Value = [];
            element._rawValue = [];
          }
        }
        if (header.tag === TAGS.specificCharacterSet) {
          decoderInForce = decoderFor((element.Value || []).map(valueText));
          stream.setDecoder(decoderInForce);
          // Written back in UTF-8, whatever it was.
          setValues(element, ["ISO_IR 192"]);
        }
        elements[header.tag] = element;
      }
    } finally {
      decoderInForce = outerDecoder;
    }
    if (topLevel && !topLevel.complete) {
      throw new NeedMoreBytes();
    }
    return { elements, pixelData: null };
  }

  function dictionaryVr(tag) {
    const entry = DicomMessage.lookupTag(Tag.fromString(tag));
    return entry ? entry.vr : "";
  }

  // The next element's tag, VR (explicit only), value length and where its value starts;
  // checks that the value lies inside what was read.
  function peekHeader(stream, implicit, littleEndian, topLevel) {
    const start = stream.offset;
    const available = stream.endOffset;
    const cutOff = () => {
      if (!topLevel) {
        return new Unreadable(`An element at byte ${start} of a sequence item runs past its end.`);
      }
      return topLevel.complete
        ? new Unreadable(`The file is cut off (at byte ${available}).`)
        : new NeedMoreBytes();
    };
    if (start + 8 > available) {
      throw cutOff();
    }
    const endian = stream.isLittleEndian;
    stream.setEndian(littleEndian);
    try {
      const group = stream.readUint16();
      const number = stream.readUint16();
      const tag = hex4(group) + hex4(number);
      let vr = "";
      let length;
      if (implicit) {
        length = stream.readUint32();
      } else {
        vr = stream.readVR();
        if (!VALID_VRS.has(vr)) {
          throw new Unreadable(`Its element (${hex4(group)},${hex4(number)}) has no valid VR.`);
        }
        if (LONG_VRS.has(vr)) {
          if (start + 12 > available) {
            throw cutOff();
          }
          stream.increment(2);
          length = stream.readUint32();
        } else {
          length = stream.readUint16();
        }
      }
      const valueStart = stream.offset;
      if (tag !== PIXEL_DATA && length !== UNDEFINED_LENGTH && valueStart + length > available) {
        throw cutOff();
      }
      return { tag, vr, length, start, valueStart };
    } finally {
      stream.offset = start;
      stream.setEndian(endian);
    }
  }

  function readFileMeta(buffer) {
    const view = new DataView(buffer);
    if (
      buffer.byteLength < 132 ||
      String.fromCharCode(...new Uint8Array(buffer, 128, 4)) !== "DICM"
    ) {
      throw new NotDicom("no DICOM file header");
    }
    const stream = new ReadBufferStream(buffer);
    stream.reset();
    stream.increment(132);
    const meta = {};
    while (
      stream.offset + 4 <= buffer.byteLength &&
      view.getUint16(stream.offset, true) === 0x0002
    ) {
      const read = DicomMessage._readTag(stream, EXPLICIT_LITTLE_ENDIAN);
      const tag = read.tag.toCleanString();
      if (tag !== "00020000") {
        // dcmjs writes the group length itself.
        const element = ValueRepresentation.addTagAccessors({ vr: read.vr.type });
        element.Value = read.values;
        element._rawValue = read.rawValues;
        meta[tag] = element;
      }
    }
    return { meta, datasetStart: stream.offset, stream };
  }

  // The parsed header of a DICOM file and where its pixel data lies; NotDicom or Unreadable.
  async function readHeader(file) {
    if (file.size < 132) {
      throw new NotDicom("too small");
    }
    let length = Math.min(file.size, FIRST_READ);
    for (;;) {
      const buffer = await file.slice(0, length).arrayBuffer();
      const complete = length === file.size;
      try {
        return await parseHeader(file, buffer, complete);
      } catch (error) {
        if (error instanceof NotDicom || error instanceof Unreadable) {
          throw error;
        }
        if (!complete) {
          length = Math.min(file.size, length * 8);
          continue;
        }
        throw new Unreadable(`It cannot be read, it may be cut off (${error.message}).`);
      }
    }
  }

  async function parseHeader(file, buffer, complete) {
    const { meta, stream } = readFileMeta(buffer);
    if (firstText(meta[TAGS.mediaStorageSopClassUid]) === DICOMDIR_CLASS) {
      throw new NotDicom("DICOMDIR");
    }
    const syntax = firstText(meta[TAGS.transferSyntaxUid]);
    if (!syntax) {
      throw new Unreadable("Its header does not say how its data is encoded (no transfer syntax).");
    }
    if (syntax === DEFLATED) {
      throw new Unreadable(
        "Its data set is deflated (transfer syntax Deflated Explicit VR Little Endian), which " +
          "this page cannot pseudonymize; convert it to another transfer syntax first.",
      );
    }
    const datasetSyntax = [IMPLICIT_LITTLE_ENDIAN, EXPLICIT_BIG_ENDIAN].includes(syntax)
      ? syntax
      : EXPLICIT_LITTLE_ENDIAN;
    decoderInForce = textDecoder("windows-1252");
    let read;
    try {
      read = readElements(stream, datasetSyntax, { complete });
    } finally {
      decoderInForce = null;
    }
    const header = { meta, elements: read.elements, syntax: datasetSyntax, pixelStart: file.size };
    header.pixelEnd = file.size;
    if (read.pixelData) {
      header.pixelStart = read.pixelData.start;
      header.pixelEnd = await pixelDataEnd(file, read.pixelData);
    }
    for (const [keyword, tag] of Object.entries(REQUIRED_UIDS)) {
      if (!firstText(header.elements[tag])) {
        throw new Unreadable(`It is no DICOM instance: it has no ${keyword}.`);
      }
    }
    return header;
  }

  // Where the pixel data element ends; encapsulated pixel data is walked item by item, reading
  // only the item headers.
  async function pixelDataEnd(file, pixelData) {
    const cutOff = new Unreadable(`The file is cut off in its pixel data (at byte ${file.size}).`);
    if (pixelData.length !== UNDEFINED_LENGTH) {
      const end = pixelData.valueStart + pixelData.length;
      if (end > file.size) {
        throw cutOff;
      }
      return end;
    }
    const reader = chunkReader(file);
    let position = pixelData.valueStart;
    for (;;) {
      if (position + 8 > file.size) {
        throw cutOff;
      }
      const view = await reader(position, 8);
      const tag = hex4(view.getUint16(0, true)) + hex4(view.getUint16(2, true));
      const length = view.getUint32(4, true);
      if (tag === "FFFEE0DD") {
        return position + 8;
      }
      if (tag !== "FFFEE000" || length === UNDEFINED_LENGTH) {
        throw new Unreadable(`Its encapsulated pixel data is broken at byte ${position}.`);
      }
      position += 8 + length;
    }
  }

  function chunkReader(file) {
    const chunkSize = 64 * 1024;
    let chunkStart = -1;
    let chunk = null;
    return async (position, length) => {
      if (
        chunk === null ||
        position < chunkStart ||
        position + length > chunkStart + chunk.byteLength
      ) {
        chunkStart = position;
        chunk = await file.slice(position, position + Math.max(chunkSize, length)).arrayBuffer();
      }
      return new DataView(chunk, position - chunkStart, length);
    };
  }

  // -- Values --------------------------------------------------------------------------------

  function personNameText(value) {
    if (value === null || value === undefined) {
      return "";
    }
    if (typeof value === "string") {
      return value;
    }
    const groups = [value.Alphabetic || "", value.Ideographic || "", value.Phonetic || ""];
    while (groups.length && !groups[groups.length - 1]) {
      groups.pop();
    }
    return groups.join("=");
  }

  function valueText(value) {
    if (value === null || value === undefined) {
      return "";
    }
    if (
      typeof value === "object" &&
      !(value instanceof ArrayBuffer) &&
      !ArrayBuffer.isView(value)
    ) {
      return personNameText(value);
    }
    return typeof value === "string" || typeof value === "number" ? String(value) : "";
  }

  // The element's values as texts; numbers as the file has them (dcmjs turns them into numbers).
  function texts(element) {
    if (!element) {
      return [];
    }
    const raw = Array.isArray(element._rawValue) ? element._rawValue : [];
    return (element.Value || [])
      .map((value, index) =>
        typeof value === "number" && typeof raw[index] === "string"
          ? raw[index].trim()
          : valueText(value),
      )
      .filter((text) => text !== "");
  }

  function firstText(element) {
    return texts(element)[0] || "";
  }

  function setValues(element, values) {
    element.Value = values;
    delete element._rawValue;
  }

  function newElement(vr, values) {
    const element = ValueRepresentation.addTagAccessors({ vr });
    element.Value = values;
    return element;
  }

  function normalVr(vr) {
    return AMBIGUOUS_VRS[vr] || vr;
  }

  // -- Pseudonymization ----------------------------------------------------------------------

  const encoder = new TextEncoder();
  const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

  function base32(bytes) {
    let bits = 0;
    let buffer = 0;
    let text = "";
    for (const byte of bytes) {
      buffer = (buffer << 8) | byte;
      bits += 8;
      while (bits >= 5) {
        text += BASE32[(buffer >>> (bits - 5)) & 31];
        bits -= 5;
      }
    }
    if (bits > 0) {
      text += BASE32[(buffer << (5 - bits)) & 31];
    }
    return text;
  }

  // What one upload needs to pseudonymize its files: its key and values, and the profile.
  async function createContext(profile, options) {
    const key = await crypto.subtle.importKey(
      "raw",
      encoder.encode(options.key),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    const scrubbing = profile.scrubbing;
    return {
      profile,
      key,
      pseudonym: options.pseudonym,
      trialProtocolId: options.trialProtocolId || "",
      trialProtocolName: options.trialProtocolName || "",
      keptUidTags: new Set(profile.kept_uid_tags),
      patientIdentityTags: new Set(scrubbing.patient_identity_tags),
      identifierTags: new Set(scrubbing.identifier_tags),
      removedGroups: profile.removed_groups.map(([first, last]) => [
        parseInt(first, 16),
        parseInt(last, 16),
      ]),
      hashes: new Map(),
    };
  }

  async function hmac(context, bytes) {
    return new Uint8Array(await crypto.subtle.sign("HMAC", context.key, bytes));
  }

  // The same as _BasicProfileCleaner._new_uid, keyed with the upload's key.
  async function newUid(context, uid) {
    const original = String(uid).replace(/[\0 ]+$/, "");
    const cacheKey = `uid:${original}`;
    if (!context.hashes.has(cacheKey)) {
      const label = encoder.encode(context.profile.uid_label);
      const value = encoder.encode(original);
      const message = new Uint8Array(label.length + value.length);
      message.set(label);
      message.set(value, label.length);
      const digest = await hmac(context, message);
      let number = 0n;
      for (const byte of digest.subarray(0, 16)) {
        number = (number << 8n) | BigInt(byte);
      }
      // _as_uuid_version_8: version 8 (custom) and the RFC 9562 variant.
      number = (number & ~(0xfn << 76n)) | (0x8n << 76n);
      number = (number & ~(0x3n << 62n)) | (0x2n << 62n);
      context.hashes.set(cacheKey, `${context.profile.uid_root}.${number}`);
    }
    return context.hashes.get(cacheKey);
  }

  // The same as _BasicProfileCleaner._keyed_hash: 16 base32 characters (fits SH).
  async function keyedHash(context, text) {
    const cacheKey = `text:${text}`;
    if (!context.hashes.has(cacheKey)) {
      const digest = await hmac(context, encoder.encode(text));
      context.hashes.set(cacheKey, base32(digest.subarray(0, 10)));
    }
    return context.hashes.get(cacheKey);
  }

  function actionByKind(context, tag, vr, element) {
    const group = parseInt(tag.slice(0, 4), 16);
    if (group % 2 === 1) {
      return "REMOVE";
    }
    if (context.removedGroups.some(([first, last]) => first <= group && group <= last)) {
      return "REMOVE";
    }
    const profile = context.profile;
    const action = profile.actions_by_vr[vr] ?? profile.default_action;
    if (action === "NEW_UID") {
      const uids = texts(element);
      const standard =
        uids.length > 0 && uids.every((uid) => uid.startsWith(profile.standard_uid_root));
      if (context.keptUidTags.has(tag) || standard) {
        return "KEEP";
      }
    }
    return action;
  }

  async function walk(context, elements, findings) {
    for (const tag of Object.keys(elements).sort()) {
      const element = elements[tag];
      const vr = normalVr(element.vr);
      if (vr === "PN" || context.identifierTags.has(tag)) {
        findings.note(tag, vr, texts(element));
      }
      const action = context.profile.actions[tag] ?? actionByKind(context, tag, vr, element);
      await apply(context, action, elements, tag, vr, findings);
      if (tag in elements && vr === "SQ") {
        for (const item of elements[tag].Value || []) {
          await walk(context, item, findings);
        }
      }
    }
  }

  async function apply(context, action, elements, tag, vr, findings) {
    const element = elements[tag];
    const profile = context.profile;
    switch (action) {
      case "REMOVE":
        if (vr === "SQ") {
          findings.noteRemovedSequence(element.Value || []);
        }
        delete elements[tag];
        break;
      case "EMPTY":
        setValues(element, []);
        break;
      case "CLEAN":
        if (TEXT_VRS.has(vr)) {
          findings.texts.push(element);
        }
        break;
      case "PSEUDONYM":
        setValues(element, [vr === "PN" ? { Alphabetic: context.pseudonym } : context.pseudonym]);
        break;
      case "DUMMY":
        if (texts(element).length) {
          setValues(element, [profile.dummy_text]);
        }
        break;
      case "NEW_UID": {
        const uids = (element.Value || []).map(valueText);
        const replaced = [];
        for (const uid of uids) {
          replaced.push(uid ? await newUid(context, uid) : "");
        }
        setValues(element, replaced);
        break;
      }
      case "KEYED_HASH":
      case "DICOGNITO":
        // What dicognito replaces on the server (person names, accession number, study ID),
        // replaced here by a keyed hash; sequences are walked into.
        if (vr !== "SQ") {
          const hashes = [];
          for (const text of texts(element)) {
            const hash = await keyedHash(context, text);
            hashes.push(vr === "PN" ? { Alphabetic: hash } : hash);
          }
          setValues(element, hashes);
        }
        break;
      case "KEEP":
      case "DATE":
        break;
      default:
        throw new Error(`The profile names an unknown action ${action}.`);
    }
  }

  // -- Scrubbing (as _InstanceFindings and its helpers) --------------------------------------

  function translate(text, table) {
    return Array.from(text, (character) => table[character] ?? character).join("");
  }

  function spellings(text, scrubbing) {
    const fold = (value) =>
      translate(value, scrubbing.undecomposable_letters)
        .normalize("NFKD")
        .replace(/\p{Mn}/gu, "");
    return new Set([text, fold(text), fold(translate(text, scrubbing.transliterations))]);
  }

  function nameLiterals(personName, scrubbing) {
    const forms = new Set();
    for (const group of personName.split("=")) {
      const [family = "", given = "", middle = ""] = group.split("^").map((part) => part.trim());
      const words = [family, given, middle].filter(Boolean);
      for (const word of words) {
        forms.add(word);
        for (const piece of word.split(/[\s-]+/u)) {
          forms.add(piece);
        }
      }
      if (family && given) {
        for (const form of [
          `${given} ${family}`,
          `${family}, ${given}`,
          `${family},${given}`,
          `${family} ${given}`,
          `${family}^${given}`,
        ]) {
          forms.add(form);
        }
        if (middle) {
          forms.add(`${given} ${middle} ${family}`);
        }
      }
    }
    return literalsOf(forms, scrubbing, scrubbing.min_name_part_length);
  }

  function dateLiterals(date, scrubbing) {
    const match = /^(\d{4})(\d{2})(\d{2})$/.exec(date.trim());
    if (!match) {
      return identifierLiterals(date, scrubbing);
    }
    const [, year, month, day] = match;
    return new Set([
      `${year}${month}${day}`,
      `${year}-${month}-${day}`,
      `${year}/${month}/${day}`,
      `${day}.${month}.${year}`,
      `${Number(day)}.${Number(month)}.${year}`,
      `${day}/${month}/${year}`,
      `${month}/${day}/${year}`,
    ]);
  }

  function identifierLiterals(identifier, scrubbing) {
    const text = identifier.trim();
    const forms = spellings(text, scrubbing);
    if (/^\d+$/.test(text)) {
      forms.add(text.replace(/^0+/, ""));
    }
    return literalsOf(forms, scrubbing, scrubbing.min_identifier_length, false);
  }

  function literalsOf(forms, scrubbing, minimumLength, spell = true) {
    const literals = new Set();
    for (const form of forms) {
      for (const spelling of spell ? spellings(form, scrubbing) : [form]) {
        if (Array.from(spelling).length >= minimumLength) {
          literals.add(spelling.toLowerCase());
        }
      }
    }
    return literals;
  }

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  }

  class Findings {
    constructor(context) {
      this.context = context;
      this.scrubbing = context.profile.scrubbing;
      this.patientLiterals = new Set();
      this.otherLiterals = new Set();
      this.texts = [];
    }

    note(tag, vr, values) {
      const literals = this.context.patientIdentityTags.has(tag)
        ? this.patientLiterals
        : this.otherLiterals;
      for (const text of values) {
        const found =
          vr === "PN"
            ? nameLiterals(text, this.scrubbing)
            : vr === "DA"
              ? dateLiterals(text, this.scrubbing)
              : identifierLiterals(text, this.scrubbing);
        for (const literal of found) {
          literals.add(literal);
        }
      }
    }

    noteRemovedSequence(items) {
      for (const item of items) {
        for (const [tag, element] of Object.entries(item)) {
          const vr = normalVr(element.vr);
          if (vr === "PN" || this.context.identifierTags.has(tag)) {
            this.note(tag, vr, texts(element));
          }
          if (vr === "SQ") {
            this.noteRemovedSequence(element.Value || []);
          }
        }
      }
    }

    scrub(pseudonym) {
      if (!this.texts.length) {
        return;
      }
      const replacements = new Map();
      for (const literal of this.otherLiterals) {
        replacements.set(literal, this.scrubbing.redaction_mark);
      }
      // The patient's own identifiers win where a literal is both (a namesake physician).
      for (const literal of this.patientLiterals) {
        replacements.set(literal, pseudonym);
      }
      if (!replacements.size) {
        return;
      }
      const alternatives = [...replacements.keys()]
        .sort((a, b) => b.length - a.length)
        .map(escapeRegExp)
        .join("|");
      const pattern = new RegExp(
        `(?<![\\p{L}\\p{N}_])(?:${alternatives})(?![\\p{L}\\p{N}_])`,
        "giu",
      );
      const redact = (text) =>
        text.replace(
          pattern,
          (match) => replacements.get(match.toLowerCase()) ?? this.scrubbing.redaction_mark,
        );
      const maxLengths = this.context.profile.max_text_lengths;
      for (const element of this.texts) {
        const values = element.Value || [];
        const maxLength = maxLengths[normalVr(element.vr)];
        const scrubbed = values.map((value) => {
          if (typeof value !== "string") {
            return value;
          }
          const clean = Array.from(redact(value));
          return (maxLength === undefined ? clean : clean.slice(0, maxLength)).join("");
        });
        if (scrubbed.some((value, index) => value !== values[index])) {
          setValues(element, scrubbed);
        }
      }
    }
  }

  function parseDate(text) {
    const match = /^(\d{4})(\d{2})(\d{2})$/.exec(text);
    if (!match) {
      return null;
    }
    const [year, month, day] = match.slice(1).map(Number);
    const date = new Date(Date.UTC(year, month - 1, day));
    if (
      date.getUTCFullYear() !== year ||
      date.getUTCMonth() !== month - 1 ||
      date.getUTCDate() !== day
    ) {
      return null;
    }
    return { year, month, day, time: date.getTime() };
  }

  // The same as _age_string: the DICOM age (AS) of someone born on birthDate, on onDate.
  function ageString(birthDate, onDate) {
    const born = parseDate(birthDate);
    const on = parseDate(onDate);
    if (!born || !on || on.time < born.time) {
      return "";
    }
    const beforeBirthday = on.month < born.month || (on.month === born.month && on.day < born.day);
    const years = on.year - born.year - (beforeBirthday ? 1 : 0);
    const pad = (number) => String(number).padStart(3, "0");
    if (years >= 2) {
      return `${pad(Math.min(years, 999))}Y`;
    }
    const months = (on.year - born.year) * 12 + on.month - born.month - (on.day < born.day ? 1 : 0);
    if (months >= 1) {
      return `${pad(months)}M`;
    }
    return `${pad(Math.round((on.time - born.time) / 86400000))}D`;
  }

  // The same as Pseudonymizer._write_identity and _write_deidentification_record.
  function writeIdentity(context, elements, originalBirthDate, originalStudyDate) {
    const pseudonym = context.pseudonym;
    elements[TAGS.patientId] = newElement("LO", [pseudonym]);
    elements[TAGS.patientName] = newElement("PN", [{ Alphabetic: pseudonym }]);
    if (!firstText(elements[TAGS.patientAge])) {
      const age = ageString(originalBirthDate, originalStudyDate);
      if (age) {
        elements[TAGS.patientAge] = newElement("AS", [age]);
      }
    }
    if (context.trialProtocolId) {
      elements[TAGS.trialProtocolId] = newElement("LO", [context.trialProtocolId]);
    }
    if (context.trialProtocolName) {
      elements[TAGS.trialProtocolName] = newElement("LO", [context.trialProtocolName]);
    }
    if (context.trialProtocolId) {
      const session = `${pseudonym}_${firstText(elements[TAGS.studyDate])}-${firstText(elements[TAGS.studyTime])}`;
      elements[TAGS.patientComments] = newElement("LT", [
        `Project:${context.trialProtocolId} Subject:${pseudonym} Session:${session}`,
      ]);
    }
    const profile = context.profile;
    elements[TAGS.patientIdentityRemoved] = newElement("CS", ["YES"]);
    elements[TAGS.deidentificationMethod] = newElement("LO", [...profile.deidentification_method]);
    elements[TAGS.deidentificationMethodCodes] = newElement(
      "SQ",
      profile.deidentification_codes.map(([value, meaning]) => ({
        [TAGS.codeValue]: newElement("SH", [value]),
        [TAGS.codingSchemeDesignator]: newElement("SH", ["DCM"]),
        [TAGS.codeMeaning]: newElement("LO", [meaning]),
      })),
    );
    elements[TAGS.temporalInformationModified] = newElement("CS", ["UNMODIFIED"]);
    // Every text is a JavaScript string now, and dcmjs writes them in UTF-8.
    elements[TAGS.specificCharacterSet] = newElement("CS", ["ISO_IR 192"]);
  }

  // The pseudonymized header, as the bytes of a DICOM file up to its pixel data.
  async function pseudonymizeHeader(context, header) {
    const { meta, elements } = header;
    const originalBirthDate = firstText(elements[TAGS.patientBirthDate]);
    const originalStudyDate = firstText(elements[TAGS.studyDate]);
    const findings = new Findings(context);
    await walk(context, meta, findings);
    await walk(context, elements, findings);
    findings.scrub(context.pseudonym);
    writeIdentity(context, elements, originalBirthDate, originalStudyDate);
    meta[TAGS.mediaStorageSopInstanceUid] = newElement("UI", [
      firstText(elements[TAGS.sopInstanceUid]),
    ]);
    meta[TAGS.mediaStorageSopClassUid] = newElement("UI", [firstText(elements[TAGS.sopClassUid])]);
    const dicomDict = new DicomDict(meta);
    dicomDict.dict = elements;
    // Values are written as they were read, even where they break their VR's length (old
    // dates like "1997.04.24"): the server stores what the modality wrote.
    return dicomDict.write({ allowInvalidVRLength: true });
  }

  // The file pseudonymized: its new header and its pixel data as they are.
  async function pseudonymizeFile(context, file) {
    const header = await readHeader(file);
    const newHeader = await pseudonymizeHeader(context, header);
    return new Blob([newHeader, file.slice(header.pixelStart, header.pixelEnd)], {
      type: "application/dicom",
    });
  }

  // What the summary needs of a file.
  function describe(header) {
    const elements = header.elements;
    return {
      patientId: firstText(elements[TAGS.patientId]),
      patientName: firstText(elements[TAGS.patientName]),
      birthDate: firstText(elements[TAGS.patientBirthDate]),
      studyUid: firstText(elements[TAGS.studyInstanceUid]),
      studyDate: firstText(elements[TAGS.studyDate]),
      studyDescription: firstText(elements[TAGS.studyDescription]),
      seriesUid: firstText(elements[TAGS.seriesInstanceUid]),
      modality: firstText(elements[TAGS.modality]),
    };
  }

  window.aditPseudonymizer = {
    NotDicom,
    Unreadable,
    readHeader,
    describe,
    createContext,
    pseudonymizeFile,
    // For tests: one file pseudonymized with the page's profile.
    async pseudonymize(blob, options) {
      const profile = JSON.parse(document.getElementById("upload-profile").textContent);
      return pseudonymizeFile(await createContext(profile, options), blob);
    },
  };
})();
