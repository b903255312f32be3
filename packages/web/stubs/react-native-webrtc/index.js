// See package.json: a browser build never loads this; anything that does is told why it is empty.
throw new Error('react-native-webrtc is not part of the dflmoe workspace (browser builds use the browser\'s WebRTC)');
