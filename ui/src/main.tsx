import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './app.tsx';
import { prefetchRepositories } from './pages/home.tsx';
import './styles.css';

if (window.location.pathname === '/ui/') prefetchRepositories();

createRoot(document.getElementById('root')!).render(<StrictMode><App /></StrictMode>);
