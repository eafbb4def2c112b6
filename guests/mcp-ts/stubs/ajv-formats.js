// See stubs/ajv.js.
export default function addFormats(ajv) {
  return ajv;
}
