// Ajv left out of the bundle (see wrangler.toml): never constructed, since
// the server gives the SDK the @cfworker/json-schema validator.
export default class Ajv {
  constructor() {
    throw new Error("Ajv is not bundled: pass jsonSchemaValidator: new CfWorkerJsonSchemaValidator()");
  }
}
