// emo-prep serve's page: send the photo to POST /v1/check, show the verdict, the boxes drawn on
// the photo, the ext_bbox crop at EMO's output size, and every finding with its hints (EN + ZH).
"use strict";
const OUTPUT = { "1:1": [512, 512], "3:4": [512, 704] };
const $ = (id) => document.getElementById(id);
let current = null;

function ratio() { return document.querySelector("input[name=ratio]:checked").value; }

async function check(file) {
  current = file;
  $("error").hidden = true;
  $("verdict").textContent = "checking… / 检查中…";
  $("verdict").className = "";
  $("result").hidden = false;
  let record;
  try {
    const answer = await fetch(`/v1/check?ratio=${encodeURIComponent(ratio())}&name=${encodeURIComponent(file.name)}`,
                               { method: "POST", body: file });
    record = await answer.json();
    if (!answer.ok) throw new Error(`${record.code}: ${record.message}${record.hint ? " (" + record.hint + ")" : ""}`);
  } catch (err) {
    $("result").hidden = true;
    $("error").textContent = `Error / 错误: ${err.message}`;
    $("error").hidden = false;
    return;
  }
  show(record, file);
}

function show(record, file) {
  const verdict = $("verdict");
  verdict.textContent = record.ok ? "PASS / 通过" : "REJECT / 不通过";
  verdict.className = record.ok ? "pass" : "reject";
  verdict.dataset.ok = String(record.ok);
  $("boxes").textContent = record.face_bbox
    ? `ratio ${record.ratio}  face_bbox [${record.face_bbox}]  ext_bbox [${record.ext_bbox}]` : `ratio ${record.ratio}: no face box`;
  const list = $("findings");
  list.replaceChildren();
  if (!record.findings.length) {
    const li = document.createElement("li");
    li.textContent = "No findings: EMO should accept this photo. / 未发现问题。";
    list.append(li);
  }
  for (const f of record.findings) {
    const li = document.createElement("li");
    li.dataset.code = f.code;
    const head = document.createElement("span");
    head.className = f.severity;
    head.textContent = `${f.severity} ${f.code}${f.api_code ? " (" + f.api_code + ")" : ""}: `;
    const message = document.createTextNode(f.message);
    const hint = document.createElement("span");
    hint.className = "hint";
    hint.textContent = f.hint;
    const hintZh = document.createElement("span");
    hintZh.className = "hint";
    hintZh.lang = "zh";
    hintZh.textContent = f.hint_zh;
    li.append(head, message, hint, hintZh);
    list.append(li);
  }
  draw(record, file);
}

async function draw(record, file) {
  const photo = $("photo"), crop = $("crop");
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    photo.width = crop.width = 0;  // a format the browser cannot show (HEIC, ...): the verdict stands
    return;
  }
  photo.width = bitmap.width; photo.height = bitmap.height;
  const ctx = photo.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const line = Math.max(2, Math.round(Math.max(bitmap.width, bitmap.height) / 250));
  const rect = (box, colour) => {
    ctx.strokeStyle = colour; ctx.lineWidth = line;
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  };
  for (const face of record.faces) {
    if (String(face.bbox) !== String(record.face_bbox)) rect(face.bbox, "#e03c3c");
  }
  if (record.ext_bbox) rect(record.ext_bbox, "#ff9600");
  if (record.face_bbox) rect(record.face_bbox, "#3cc83c");
  const [w, h] = OUTPUT[record.ratio];
  crop.width = w; crop.height = h;
  const cctx = crop.getContext("2d");
  cctx.fillStyle = "#444"; cctx.fillRect(0, 0, w, h);
  if (record.ext_bbox) {
    const [x1, y1, x2, y2] = record.ext_bbox;
    cctx.drawImage(bitmap, x1, y1, x2 - x1, y2 - y1, 0, 0, w, h);
  }
  $("crop-caption").textContent = `as EMO animates it (${w}x${h}) / EMO 生成的画面`;
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) check(e.target.files[0]); });
for (const radio of document.querySelectorAll("input[name=ratio]")) {
  radio.addEventListener("change", () => { if (current) check(current); });
}
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) check(e.dataTransfer.files[0]);
});
