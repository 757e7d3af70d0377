// madx-pusher browser client: `new MadxClient(token, options)`.
export { MadxClient } from './client.js';
export { base32Decode, checkOtpParams, hotp, importKey, stepAt, totp } from './totp.js';
export { closeAction, chooseStep, idAfter } from './policy.js';
